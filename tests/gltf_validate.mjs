// Prints the Khronos glTF validator's report for one GLB file as JSON (used by tests/conftest.py).
import { readFileSync } from "node:fs";
import validator from "gltf-validator";

const path = process.argv[2];
const report = await validator.validateBytes(new Uint8Array(readFileSync(path)), {
  uri: path,
  maxIssues: 100,
});
process.stdout.write(JSON.stringify(report));
