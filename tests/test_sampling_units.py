"""Unit tests for trellis_mv.sampling: time grid, Euler loop, guidance functions, batching, API."""

import numpy as np
import pytest
import torch

import trellis_mv.sampling as sampling
from trellis_mv.sampling import (
    DenseBatcher,
    StepInfo,
    cfg,
    in_interval,
    predict_many,
    rescale_cfg,
    sample_flow_euler,
    time_grid,
)


def test_public_api_is_pinned():
    assert sampling.__all__ == [
        "MODES",
        "Batcher",
        "Denoiser",
        "DenseBatcher",
        "RaggedConds",
        "StepInfo",
        "cfg",
        "guided",
        "in_interval",
        "predict_many",
        "rescale_cfg",
        "sample_flow_euler",
        "time_grid",
        "velocity_from_x0",
        "x0_from_velocity",
    ]
    assert sampling.MODES == ("stochastic", "multidiffusion", "concat")
    for name in sampling.__all__:
        assert getattr(sampling, name) is not None


# --- time grid ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("steps", "rescale_t"), [(1, 1.0), (12, 1.0), (12, 3.0), (12, 5.0), (25, 0.5), (50, 3.0)]
)
def test_time_grid_matches_trellis2_numpy(steps, rescale_t):
    # FlowEulerSampler.sample, written out with numpy as trellis2 does.
    t_seq = np.linspace(1, 0, steps + 1)
    expected = (rescale_t * t_seq / (1 + (rescale_t - 1) * t_seq)).tolist()
    assert time_grid(steps, rescale_t) == expected


@pytest.mark.parametrize(
    ("steps", "rescale_t", "expected"),
    [(2, 1.0, [1.0, 0.5, 0.0]), (2, 3.0, [1.0, 0.75, 0.0]), (4, 1.0, [1.0, 0.75, 0.5, 0.25, 0.0])],
)
def test_time_grid_hand_values(steps, rescale_t, expected):
    assert time_grid(steps, rescale_t) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    ("steps", "rescale_t", "message"),
    [(0, 1.0, "steps: 0 is not a positive integer"), (4, 0.0, "rescale_t: 0.0 is not a positive number")],
)
def test_time_grid_rejects(steps, rescale_t, message):
    with pytest.raises(ValueError, match=message):
        time_grid(steps, rescale_t)


# --- Euler loop --------------------------------------------------------------------------------

def test_euler_steps_callback_and_x0():
    sigma_min = 0.01
    ts = time_grid(4, 3.0)
    noise = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    seen_by_denoiser = []

    def denoiser(x_t, t, step):
        seen_by_denoiser.append((step, t))
        return 2.0 * x_t + 1.0  # a velocity with a known closed form per step

    infos = []
    out = sample_flow_euler(denoiser, noise, ts, sigma_min=sigma_min, callback=infos.append)

    assert seen_by_denoiser == [(i, ts[i]) for i in range(4)]
    x = noise
    for i, info in enumerate(infos):
        t, t_prev = ts[i], ts[i + 1]
        v = 2.0 * x + 1.0
        x0 = (1 - sigma_min) * x - (sigma_min + (1 - sigma_min) * t) * v
        x = x - (t - t_prev) * v
        assert isinstance(info, StepInfo)
        assert (info.step, info.steps, info.t) == (i, 4, t)
        torch.testing.assert_close(info.x, x, rtol=0, atol=0)
        torch.testing.assert_close(info.x0, x0, rtol=0, atol=0)
    assert len(infos) == 4
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    assert not torch.equal(out, noise)


def test_euler_info_is_frozen():
    info = StepInfo(step=0, steps=1, t=1.0, x=None, x0=None)
    with pytest.raises(AttributeError):
        info.step = 1  # type: ignore[misc]


@pytest.mark.parametrize(("disable", "shows_bar"), [(False, True), (True, False), (None, False)])
def test_euler_progress_bar(capsys, disable, shows_bar):
    # Under capsys stderr is not a terminal, so disable=None must behave like a worker log: no bar.
    sample_flow_euler(lambda x, t, i: x, torch.zeros(1, 2), time_grid(3), sigma_min=0.0, disable=disable,
                      desc="Sampling shape")
    assert ("Sampling shape" in capsys.readouterr().err) is shows_bar


def test_euler_rejects_grid_without_steps():
    with pytest.raises(ValueError, match="ts: needs at least 2 times"):
        sample_flow_euler(lambda x, t, i: x, torch.zeros(1), [1.0], sigma_min=0.0)


# --- guidance functions ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("strength", "expected"),
    [(1.0, [2.0, -1.0]), (0.0, [0.5, 3.0]), (3.0, [5.0, -9.0]), (7.5, [11.75, -27.0])],
)
def test_cfg_is_trellis2_convention(strength, expected):
    pos, neg = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    torch.testing.assert_close(cfg(pos, neg, strength), torch.tensor(expected))


# x_t = 0, sigma_min = 0, t = 0.5 makes x0 = -v / 2 and v = -2 x0, so every number is checkable by hand:
# x0_pos = [-0.5, 0.5] (std 1/sqrt 2), x0_cfg = [-1.5, 1.5] (std 3/sqrt 2), so x0_rescaled = [-0.5, 0.5].
@pytest.mark.parametrize(
    ("rescale", "expected"),
    [(0.0, [3.0, -3.0]), (0.5, [2.0, -2.0]), (1.0, [1.0, -1.0]), (0.7, [1.6, -1.6])],
)
def test_rescale_cfg_hand_computed(rescale, expected):
    x_t = torch.zeros(1, 2, dtype=torch.float64)
    pos = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    guided = torch.tensor([[3.0, -3.0]], dtype=torch.float64)
    out = rescale_cfg(x_t, 0.5, pos, guided, rescale, sigma_min=0.0)
    torch.testing.assert_close(out, torch.tensor([expected], dtype=torch.float64))


@pytest.mark.parametrize(
    ("guided", "expected"),
    [
        # x0_cfg = [1, 2] has the std of x0_pos = [0, 1]: the rescale changes nothing.
        ([0.0, -4.0], [0.0, -4.0]),
        # x0_cfg = [0, 3] has 3x the std: rescaled [0, 1], half-blended x0 = [0, 2], v = [2, -4].
        ([2.0, -6.0], [2.0, -4.0]),
    ],
)
def test_rescale_cfg_with_sigma_min_and_nonzero_x_t(guided, expected):
    # sigma_min = 0.5, t = 0: x0 = 0.5 x_t - 0.5 v and v = (0.5 x_t - x0) / 0.5; x0_pos = [0, 1].
    x_t = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    pos = torch.tensor([[2.0, -2.0]], dtype=torch.float64)
    out = rescale_cfg(x_t, 0.0, pos, torch.tensor([guided], dtype=torch.float64), 0.5, sigma_min=0.5)
    torch.testing.assert_close(out, torch.tensor([expected], dtype=torch.float64))


def test_rescale_cfg_is_per_sample():
    # Two batch rows with different spreads: each row is rescaled by its own std ratio.
    x_t = torch.zeros(2, 2, dtype=torch.float64)
    pos = torch.tensor([[1.0, -1.0], [2.0, -2.0]], dtype=torch.float64)
    guided = torch.tensor([[3.0, -3.0], [4.0, -4.0]], dtype=torch.float64)
    out = rescale_cfg(x_t, 0.5, pos, guided, 1.0, sigma_min=0.0)
    torch.testing.assert_close(out, pos)


@pytest.mark.parametrize(
    ("t", "interval", "expected"),
    [
        (0.6, (0.6, 1.0), True),
        (1.0, (0.6, 1.0), True),
        (0.8, (0.6, 1.0), True),
        (0.5999999, (0.6, 1.0), False),
        (0.9, (0.6, 0.9), True),
        (0.9000001, (0.6, 0.9), False),
        (0.0, (0.0, 1.0), True),
        (0.5, (0.5, 0.5), True),
    ],
)
def test_in_interval_inclusive_both_ends(t, interval, expected):
    assert in_interval(t, interval) is expected


# --- batching ----------------------------------------------------------------------------------

def test_dense_batcher_round_trip():
    items = [torch.full((1, 2, 3), float(i)) for i in range(3)]
    batcher = DenseBatcher()
    batched = batcher.cat(items)
    assert batched.shape == (3, 2, 3)
    for part, item in zip(batcher.split(batched, 3), items, strict=True):
        assert torch.equal(part, item)


@pytest.mark.parametrize("n", [0, 2])
def test_dense_batcher_rejects_uneven_split(n):
    with pytest.raises(ValueError, match=f"n: cannot split 3 rows into {n} equal parts"):
        DenseBatcher().split(torch.zeros(3, 1), n)


class RowModel:
    """Velocity = x * (1 + cond) + extra + t/1000, per row; records what each call received."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond, extra=None):
        self.calls.append({"x": x, "t": t, "cond": cond, "extra": extra})
        out = x * (1 + cond) + t[:, None] / 1000
        return out if extra is None else out + extra


@pytest.mark.parametrize(
    ("max_batch", "rows_per_call"),
    [(None, [5]), (1, [1, 1, 1, 1, 1]), (2, [2, 2, 1]), (3, [3, 2]), (5, [5]), (8, [5])],
)
def test_predict_many_chunks_and_matches_single_passes(max_batch, rows_per_call):
    x = torch.tensor([[1.0, 2.0]])
    conds = [torch.full((1, 2), float(i)) for i in range(5)]
    extra = torch.tensor([[0.25, -0.25]])
    model = RowModel()
    preds = predict_many(model, x, 0.3, conds, DenseBatcher(), max_batch=max_batch,
                         model_kwargs={"extra": extra})

    assert [call["x"].shape[0] for call in model.calls] == rows_per_call
    for call in model.calls:
        rows = call["x"].shape[0]
        assert call["t"].dtype == torch.float32
        assert torch.equal(call["t"], torch.tensor([1000 * 0.3] * rows, dtype=torch.float32))
        assert torch.equal(call["extra"], extra.expand(rows, 2))
    assert len(preds) == 5
    for i, pred in enumerate(preds):
        expected = x * (1 + i) + torch.tensor(1000 * 0.3, dtype=torch.float32) / 1000 + extra
        torch.testing.assert_close(pred, expected)


class TokenModel:
    """Velocity = x times the mean of each row's cond tokens; conds ``[B, L, 1]`` or a list of ``[L_i, 1]``."""

    def __init__(self):
        self.lengths = []

    def __call__(self, x, t, cond):
        rows = list(cond) if isinstance(cond, list) else list(cond.unbind(0))
        self.lengths.append([row.shape[0] for row in rows])
        return x * torch.stack([row.mean() for row in rows])[:, None]


class ListConds(DenseBatcher):
    """A dense batcher whose model also takes a list of conds of different lengths (``RaggedConds``)."""

    def cat_conds(self, conds):
        return [cond[0] for cond in conds]


@pytest.mark.parametrize(
    ("batcher", "max_batch", "lengths_per_call"),
    [
        (DenseBatcher(), None, [[1], [3, 3], [1]]),  # cut where the length changes: no padding, no tiling
        (DenseBatcher(), 1, [[1], [3], [3], [1]]),
        (ListConds(), None, [[1, 3, 3, 1]]),  # one call, each row with its own tokens
        (ListConds(), 3, [[1, 3, 3], [1]]),
    ],
)
def test_predict_many_gives_each_pass_only_its_own_cond_tokens(batcher, max_batch, lengths_per_call):
    x = torch.tensor([[2.0]])
    conds = [torch.full((1, n, 1), value) for n, value in ((1, 1.0), (3, 2.0), (3, 3.0), (1, 4.0))]
    model = TokenModel()
    preds = predict_many(model, x, 0.5, conds, batcher, max_batch=max_batch)
    assert model.lengths == lengths_per_call
    assert [pred.item() for pred in preds] == [2.0, 4.0, 6.0, 8.0]
    assert isinstance(batcher, sampling.RaggedConds) is (type(batcher) is ListConds)


def test_predict_many_single_pass_uses_inputs_as_given():
    x, cond, extra = torch.ones(1, 2), torch.zeros(1, 2), torch.ones(1, 2)
    model = RowModel()
    predict_many(model, x, 1.0, [cond], DenseBatcher(), model_kwargs={"extra": extra})
    (call,) = model.calls
    assert call["x"] is x and call["cond"] is cond and call["extra"] is extra


@pytest.mark.parametrize(
    ("conds", "max_batch", "message"),
    [
        ([], None, "conds: needs at least one condition"),
        ([torch.zeros(1, 2)], 0, "max_batch: 0 is not a positive integer or None"),
    ],
)
def test_predict_many_rejects(conds, max_batch, message):
    with pytest.raises(ValueError, match=message):
        predict_many(RowModel(), torch.zeros(1, 2), 0.5, conds, DenseBatcher(), max_batch=max_batch)


def test_dense_batcher_is_a_batcher():
    assert isinstance(DenseBatcher(), sampling.Batcher)
