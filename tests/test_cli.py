"""``python -m trellis_mv generate``: options from the schema, files out, the worker's errors, progress bars.

The CPU generator stands in for TRELLIS.2 through ``TRELLIS_MV_GENERATOR``, as in the handler tests;
one run goes through a real ``python -m trellis_mv`` subprocess, the rest call ``cli.main`` directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import BaseModel

from trellis_mv import cli
from trellis_mv.schema import JobInput

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
CPU = {"TRELLIS_MV_GENERATOR": "trellis_mv.standin:create"}


def leaf_fields(model: type[BaseModel] = JobInput, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found = set()
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found |= leaf_fields(info.annotation, (*prefix, name))
        else:
            found.add((*prefix, name))
    return found


def test_every_field_of_the_job_has_a_flag_or_is_set_by_the_command():
    flags = cli.flags()
    covered = {path for flag in flags for path in flag.paths}
    assert covered | cli.COMMAND_FIELDS == leaf_fields()
    assert not covered & cli.COMMAND_FIELDS
    options = [flag.option for flag in flags]
    assert len(options) == len(set(options))
    assert not {flag.dest for flag in flags} & {"images", "output", "verbose", "command"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {}),
        (["--mode", "multidiffusion", "--seed", "42", "--pipeline-type", "512"],
         {"mode": "multidiffusion", "seed": 42, "pipeline_type": "512"}),
        (["--steps", "8", "--shape-slat-steps", "3"],
         {"sparse_structure": {"steps": 8}, "shape_slat": {"steps": 3}, "tex_slat": {"steps": 8}}),
        (["--tex-slat-mode", "stochastic", "--guidance-interval", "0.5", "1"],
         {"tex_slat": {"mode": "stochastic", "guidance_interval": [0.5, 1.0]},
          "sparse_structure": {"guidance_interval": [0.5, 1.0]}, "shape_slat": {"guidance_interval": [0.5, 1.0]}}),
        (["--no-remesh", "--texture-size", "1024", "--texture-format", "png", "--decimation-target", "50000"],
         {"glb": {"remesh": False, "texture_size": 1024, "texture_format": "png", "decimation_target": 50000}}),
        (["--remove-background", "false"], {"preprocess": {"remove_background": False}}),
        (["--remove-background", "auto", "--preview"], {"preprocess": {"remove_background": "auto"}, "output": {"type": "base64", "preview": True}}),
    ],
)
def test_options_become_the_job_input(argv, expected):
    args = cli.parser().parse_args(["generate", "a.png", *argv])
    assert cli.job_input(args, ["<a>"]) == {"images": ["<a>"], "output": {"type": "base64"}, **expected}


def test_the_command_writes_the_glb_the_report_and_the_preview(photos, tmp_path, valid_glb):
    output = tmp_path / "out" / "chair.glb"
    output.parent.mkdir()
    env = {**os.environ, **CPU, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run(
        [sys.executable, "-m", "trellis_mv", "generate", *map(str, photos), "-o", str(output), "--steps", "2", "--seed", "3", "--preview"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50,
    )
    assert done.returncode == 0, done.stderr
    glb = output.read_bytes()
    valid_glb(glb)
    report = json.loads(output.with_suffix(".json").read_text())
    assert "base64" not in json.dumps(report)
    assert report["glb"] == {"path": str(output), "bytes": len(glb), "sha256": hashlib.sha256(glb).hexdigest()}
    assert (report["seed"], report["views"], report["mode"]) == (3, 2, "stochastic")
    sheet = output.with_suffix(".preview.png")
    assert report["preview"]["path"] == str(sheet) and report["preview"]["bytes"] == sheet.stat().st_size
    with Image.open(sheet) as image:
        assert image.format == "PNG"
    assert len(report["views_fit"]) == 2 and all(0.6 < fit["iou"] <= 1 for fit in report["views_fit"])
    assert {"validate", "generate", "export", "preview", "store", "total"} <= set(report["timings"])
    lines = done.stdout.splitlines()
    assert lines[0] == f"wrote {output} ({len(glb):,} bytes, 1,280 faces) and {output.with_suffix('.json')}"
    assert lines[1] == f"wrote {sheet}" and lines[2].startswith("view 1: IoU ")
    # no terminal, no bars: one line per stage on stderr, and the answer's warnings logged
    stages = ["validate", "decode", "generate", "sparse_structure", "shape_slat", "tex_slat", "export", "preview", "store"]
    logged = [line for line in done.stderr.splitlines() if " WARNING trellis_mv.worker: " in line]
    assert [line for line in done.stderr.splitlines() if line not in logged] == stages
    assert [line.split("job local: ", 1)[1] for line in logged] == report["warnings"]


def test_the_glb_goes_beside_the_first_image_by_default(photos, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["generate", str(photos[0]), "--steps", "1"], env=CPU) == 0
    assert sorted(path.name for path in photos[0].parent.iterdir()) == ["view0.glb", "view0.json", "view0.png", "view1.png"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "sparse_structure.steps: 0 is not in the range 1<=x<=50; shape_slat.steps: 0 is not in the range "
                           "1<=x<=50; tex_slat.steps: 0 is not in the range 1<=x<=50"),
        (["--mode", "fast"], 'mode: "fast" is not allowed; use "stochastic", "multidiffusion" or "concat"'),
        (["--texture-size", "100"], "glb.texture_size: 100 is not in the range 512<=x<=4096"),
        (["--remove-background", "yes"], 'preprocess.remove_background: "yes" is not allowed; use "auto", true or false'),
        (["--shape-slat-guidance-interval", "0.9", "0.1"],
         "shape_slat.guidance_interval: [0.9, 0.1] is not an interval [start, end] with 0<=start<=end<=1"),
        (["--mode", "multidiffusion", "--view-weights", "1", "2", "3"],
         "view_weights: 3 weights given for 2 images; send one positive number per image"),
    ],
)
def test_a_bad_value_is_a_bad_command_line_refused_in_the_workers_words(photos, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:  # before the generator is built: no stage has started
        cli.main(["generate", *map(str, photos), *argv], env={"TRELLIS_MV_GENERATOR": "no_such_module:create"})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m trellis_mv") and err.endswith(f"error: {message}\n")
    assert not photos[0].with_suffix(".glb").exists()


def test_a_file_that_is_no_image_is_refused_by_its_position(photos, capsys, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", str(photos[0]), str(notes)], env=CPU)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: images[1]: not a PNG, JPEG or WebP image")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "missing.png"], "missing.png: No such file or directory"),
        (["generate", "{photo}", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
        (["generate"], "the following arguments are required: IMAGE"),
        (["generate", "{photo}", "-o", "/no/such/folder/out.glb"], "/no/such/folder/out.glb: cannot write to /no/such/folder"),
    ],
)
def test_a_bad_command_line_exits_with_status_2(photos, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main([arg.format(photo=photos[0]) for arg in argv], env=CPU)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(message)


def test_a_bad_setting_exits_with_status_1(photos, capsys):
    assert cli.main(["generate", str(photos[0])], env={**CPU, "TRELLIS_MV_MAX_VIEWS": "many"}) == 1
    assert capsys.readouterr().err == "error: TRELLIS_MV_MAX_VIEWS: expected an integer, got 'many'\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="without a generator hook, a CUDA machine would load TRELLIS.2")
def test_without_a_gpu_the_command_says_so(photos, capsys):
    assert cli.main(["generate", str(photos[0])], env={}) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: this worker needs a CUDA GPU: torch.cuda.is_available() is False; run it on a GPU endpoint, "
        "or set TRELLIS_MV_GENERATOR=trellis_mv.standin:create to try it with a stand-in shape"
    )


def test_progress_bars_follow_the_job():
    out = io.StringIO()
    with cli.ProgressBars(file=out, disable=False) as bars:
        bars({"stage": "generate"})
        for step in range(1, 5):
            bars({"stage": "sparse_structure", "step": step, "steps": 4})
        for step in range(1, 9):
            bars({"stage": "shape_slat", "step": step, "steps": 8})
        bars({"stage": "export"})
    text = out.getvalue()
    assert "sparse_structure: 100%" in text and "4/4" in text
    assert "shape_slat: 100%" in text and "8/8" in text
    assert text.index("generate") < text.index("sparse_structure") < text.index("shape_slat") < text.index("export")
    assert "it/s" not in text and "0it" not in text  # a step without a count is a line, not an empty bar
    assert text.splitlines()[0] == "generate" and text.splitlines()[-1] == "export"
