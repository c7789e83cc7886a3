// Reads one GLB as a viewer would (glTF-Transform, Draco decoded by Google's draco3dgltf) and prints
// what it found as JSON: extensions, and per primitive the vertex and index counts, the position
// bounds and the longest and shortest normal (used by tests/test_export_glb.py).
import { NodeIO } from "@gltf-transform/core";
import { ALL_EXTENSIONS } from "@gltf-transform/extensions";
import draco3d from "draco3dgltf";

const io = new NodeIO()
  .registerExtensions(ALL_EXTENSIONS)
  .registerDependencies({ "draco3d.decoder": await draco3d.createDecoderModule() });
const document = await io.read(process.argv[2]);
const root = document.getRoot();
const primitives = root.listMeshes().flatMap((mesh) => mesh.listPrimitives()).map((primitive) => {
  const position = primitive.getAttribute("POSITION");
  const normal = primitive.getAttribute("NORMAL");
  let shortest = Infinity;
  let longest = -Infinity;
  for (let i = 0; normal && i < normal.getCount(); i++) {
    const length = Math.hypot(...normal.getElement(i, []));
    shortest = Math.min(shortest, length);
    longest = Math.max(longest, length);
  }
  return {
    vertices: position.getCount(),
    indices: primitive.getIndices()?.getCount() ?? 0,
    min: position.getMin([]),
    max: position.getMax([]),
    attributes: primitive.listSemantics(),
    normalLength: normal ? [shortest, longest] : null,
  };
});
const textures = root.listTextures().map((texture) => ({ mimeType: texture.getMimeType(), size: texture.getSize() }));
const extensions = root.listExtensionsUsed().map((extension) => extension.extensionName);
process.stdout.write(JSON.stringify({ extensions, primitives, textures }));
