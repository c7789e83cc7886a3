"""The one timer of steps, phases and stages (trellis_mv.timing)."""

from __future__ import annotations

import threading

import torch

from trellis_mv.gpu_random import RANDOM_OR_CAPTURE
from trellis_mv.timing import timed


def test_a_name_timed_twice_adds_up_and_other_names_stay_apart():
    timings: dict[str, float] = {"earlier": 1.5}
    for _ in range(2):
        with timed(timings, "stage", digits=4):
            pass
    assert set(timings) == {"earlier", "stage"} and timings["earlier"] == 1.5
    assert 0 <= timings["stage"] < 0.1 and timings["stage"] == round(timings["stage"], 4)


def test_a_block_that_raises_leaves_no_timing():
    timings: dict[str, float] = {}
    try:
        with timed(timings, "export"):
            raise ValueError("bad mesh")
    except ValueError:
        pass
    assert timings == {}  # a failed step answers an error, not a timing


def test_a_blocks_waits_hold_the_lock_that_graph_captures_hold(monkeypatch):
    """A device-wide wait while another thread captures a CUDA graph fails and breaks the capture
    (a start failed so on the H200): the timer waits only while no other thread may capture."""
    free_while_waiting: list[bool] = []

    def wait_for_the_gpu() -> None:
        other = threading.Thread(target=lambda: free_while_waiting.append(_try_lock()))
        other.start()
        other.join()

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", wait_for_the_gpu)
    with timed({}, "stage"):
        pass
    assert free_while_waiting == [False, False]  # before the block and after it
    assert _try_lock()


def _try_lock() -> bool:
    taken = RANDOM_OR_CAPTURE.acquire(blocking=False)
    if taken:
        RANDOM_OR_CAPTURE.release()
    return taken
