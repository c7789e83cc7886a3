"""The one timer of steps, phases and stages (trellis_mv.timing)."""

from __future__ import annotations

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
