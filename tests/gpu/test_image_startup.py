"""The image's start-up checks on a real GPU: the recorded architecture list decides (by name and
capability), and the C toolchain check agrees with Triton compiling and launching a kernel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from trellis_mv import startup
from trellis_mv.errors import StartupError


def test_the_recorded_architectures_decide_by_name_and_capability(tmp_path: Path, record) -> None:
    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    info = tmp_path / "build-info.json"
    info.write_text(json.dumps({"torch_cuda_arch_list": f"8.0 {major}.{minor}"}))
    assert startup.check_cuda(startup.image_archs(info)).startswith(f"{name}, compute capability {major}.{minor}")
    other = ("8.0",) if major != 8 else ("9.0",)
    with pytest.raises(StartupError) as raised:
        startup.check_cuda(other)
    assert str(raised.value) == startup.arch_refusal(name, (major, minor), other)
    record("startup_refusal_message", str(raised.value))


def test_the_toolchain_check_and_a_triton_kernel_launch_agree(record) -> None:
    import triton
    import triton.language as tl

    start = time.perf_counter()
    summary = startup.check_toolchain()
    record("startup_toolchain_s", round(time.perf_counter() - start, 3))
    record("startup_toolchain", summary)

    @triton.jit
    def double(source, target, count, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < count
        tl.store(target + offsets, tl.load(source + offsets, mask=mask) * 2, mask=mask)

    values = torch.arange(1000, device="cuda", dtype=torch.float32)
    doubled = torch.empty_like(values)
    start = time.perf_counter()
    double[(4,)](values, doubled, values.numel(), BLOCK=256)
    torch.cuda.synchronize()
    record("triton_first_launch_s", round(time.perf_counter() - start, 3))
    assert torch.equal(doubled, values * 2)
