"""Invariants of guided multi-view sampling, against a loop reference of trellis2's sampler math.

The model is a tiny cross-attention flow with random nonzero weights, so its velocity depends on the
condition non-linearly (docs/gpu.md, Trap 1: a zero-velocity model makes every parity test pass). Its
cross-attention is built like trellis2's (``MultiHeadAttention(type="cross", qk_rms_norm=True)``):
biased query/key/value projections, per-head RMS norm of queries and keys, torch's
``scaled_dot_product_attention``, no positional encoding on the keys. The "concat" invariants
(duplicated or reordered cond tokens change nothing) rest on exactly those properties; its negative
pass is the one-view negative itself, in a call of its own for a dense model, beside the all-views
pass in one call for a model that takes conds of different lengths (``RaggedConds``).
Everything runs in float64 so that batching differences stay far below the tolerances used.
"""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trellis_mv.sampling import MODES, DenseBatcher, guided, sample_flow_euler, time_grid

SIGMA_MIN = 1e-5
COND_TOKENS, COND_DIM = 5, 8
TOL = {"rtol": 1e-9, "atol": 1e-9}


class CrossAttention(torch.nn.Module):
    """trellis2's cross-attention at toy size: ``to_q``, ``to_kv`` (biased), per-head q/k RMS norm, SDPA, ``to_out``."""

    def __init__(self, channels=16, heads=2):
        super().__init__()
        self.heads = heads
        self.to_q = torch.nn.Linear(channels, channels)
        self.to_kv = torch.nn.Linear(COND_DIM, 2 * channels)
        self.gamma = torch.nn.Parameter(1 + 0.3 * torch.randn(2, heads, channels // heads))
        self.to_out = torch.nn.Linear(channels, channels)

    def forward(self, x, cond):
        """``x`` ``[B, T, channels]`` attends to ``cond`` ``[B, L, COND_DIM]``."""
        def heads(h):
            return h.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, H, tokens, D]

        def rms(h, gamma):  # trellis2's MultiHeadRMSNorm: unit length per head, times gamma and sqrt(D)
            return F.normalize(h, dim=-1) * gamma[:, None] * h.shape[-1] ** 0.5

        key, value = self.to_kv(cond).chunk(2, dim=-1)
        q, k = rms(heads(self.to_q(x)), self.gamma[0]), rms(heads(key), self.gamma[1])
        out = F.scaled_dot_product_attention(q, k, heads(value))
        return self.to_out(out.transpose(1, 2).flatten(2))


class TinyFlow(torch.nn.Module):
    """Latent cells attend to cond tokens, then a tanh MLP: ``model(x, 1000 t, cond, concat_cond=None)``."""

    def __init__(self, channels=3, concat_channels=0, hidden=16):
        super().__init__()
        self.embed = torch.nn.Linear(channels + concat_channels + 1, hidden)
        self.cross = CrossAttention(hidden)
        self.out = torch.nn.Linear(hidden + channels, channels)

    def forward(self, x, t, cond, concat_cond=None):
        cells = x.flatten(2).transpose(1, 2)
        if concat_cond is not None:
            cells_in = torch.cat([cells, concat_cond.flatten(2).transpose(1, 2)], -1)
        else:
            cells_in = cells
        time = (t.to(x.dtype) / 1000).view(-1, 1, 1).expand(-1, cells.shape[1], 1)
        hidden = torch.tanh(self.cross(self.embed(torch.cat([cells_in, time], -1)), cond))
        return self.out(torch.cat([hidden, cells], -1)).transpose(1, 2).reshape(x.shape)


@dataclass
class Call:
    rows: int
    labels: list
    t: torch.Tensor


class Recorder:
    """Wraps a model; records each call's batch rows and which cond each row had.

    A row's label is a view's index, "neg", or "all" (every view's tokens in order, "concat").
    """

    def __init__(self, model, views, neg_cond):
        self.model, self.views, self.neg_cond = model, views, neg_cond
        self.calls = []

    def label(self, row):
        named = {**dict(enumerate(self.views)), "neg": self.neg_cond, "all": torch.cat(self.views, dim=1)}
        for name, cond in named.items():
            if row.shape == cond.shape and torch.equal(row, cond):
                return name
        raise AssertionError("model saw a cond that is neither a view, their concatenation nor the negative")

    def __call__(self, x, t, cond, **kwargs):
        self.calls.append(Call(x.shape[0], [self.label(row) for row in cond.split(1)], t.clone()))
        return self.model(x, t, cond, **kwargs)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinyFlow().double()
    views = [torch.randn(1, COND_TOKENS, COND_DIM, dtype=torch.float64) for _ in range(4)]
    neg = torch.zeros(1, COND_TOKENS, COND_DIM, dtype=torch.float64)
    noise = torch.randn(1, 3, 2, 2, 2, dtype=torch.float64)
    return model, views, neg, noise


def reference_sample(model, noise, views, neg_cond, *, mode, steps, rescale_t, strength, interval, rescale,
                     weights=None, sigma_min=SIGMA_MIN, **kwargs):
    """trellis2's FlowEulerGuidanceIntervalSampler.sample as plain loops, one model call per pass.

    With one view every mode is exactly trellis2's math; with more, the positive prediction is the
    view of step i mod N (stochastic), the weighted mean of every view's (multidiffusion), or the
    one under all views' tokens concatenated (concat). The negative pass is always the one-view
    ``neg_cond``.
    """
    t_seq = np.linspace(1, 0, steps + 1)
    t_seq = (rescale_t * t_seq / (1 + (rescale_t - 1) * t_seq)).tolist()
    weights = [1.0] * len(views) if weights is None else list(weights)
    weights = [w / sum(weights) for w in weights]
    x = noise
    for i in range(steps):
        t, t_prev = t_seq[i], t_seq[i + 1]
        t_model = torch.tensor([1000 * t] * x.shape[0], dtype=torch.float32)
        s = strength if interval[0] <= t <= interval[1] else 1
        if s == 0:
            v = model(x, t_model, neg_cond, **kwargs)
        else:
            if mode == "stochastic":
                pos = model(x, t_model, views[i % len(views)], **kwargs)
            elif mode == "concat":
                pos = model(x, t_model, torch.cat(views, dim=1), **kwargs)
            else:
                pos = weights[0] * model(x, t_model, views[0], **kwargs)
                for w, view in zip(weights[1:], views[1:], strict=True):
                    pos = pos + w * model(x, t_model, view, **kwargs)
            v = pos
        if s not in (0, 1):
            neg = model(x, t_model, neg_cond, **kwargs)
            v = s * pos + (1 - s) * neg
            if rescale > 0:
                x_0_pos = (1 - sigma_min) * x - (sigma_min + (1 - sigma_min) * t) * pos
                x_0_cfg = (1 - sigma_min) * x - (sigma_min + (1 - sigma_min) * t) * v
                std_pos = x_0_pos.std(dim=list(range(1, x_0_pos.ndim)), keepdim=True)
                std_cfg = x_0_cfg.std(dim=list(range(1, x_0_cfg.ndim)), keepdim=True)
                x_0_rescaled = x_0_cfg * (std_pos / std_cfg)
                x_0 = rescale * x_0_rescaled + (1 - rescale) * x_0_cfg
                v = ((1 - sigma_min) * x - x_0) / (sigma_min + (1 - sigma_min) * t)
        x = x - (t - t_prev) * v
    return x


def run(model, noise, views, neg, *, mode, steps, rescale_t, strength, interval, rescale, max_batch=None,
        weights=None, model_kwargs=None, batcher=None):
    denoiser = guided(model, views, neg, mode=mode, strength=strength, rescale=rescale, interval=interval,
                      sigma_min=SIGMA_MIN, batcher=batcher or DenseBatcher(), max_batch=max_batch,
                      weights=weights, model_kwargs=model_kwargs)
    return sample_flow_euler(denoiser, noise, time_grid(steps, rescale_t), sigma_min=SIGMA_MIN)


# steps, rescale_t, strength, rescale, interval: TRELLIS.2-4B's three stages, then edge cases.
CASES = {
    "sparse_structure": dict(steps=6, rescale_t=5.0, strength=7.5, rescale=0.7, interval=(0.6, 1.0)),
    "shape_slat": dict(steps=6, rescale_t=3.0, strength=7.5, rescale=0.5, interval=(0.6, 1.0)),
    "tex_slat": dict(steps=6, rescale_t=3.0, strength=1.0, rescale=0.0, interval=(0.6, 0.9)),
    "cfg_everywhere": dict(steps=5, rescale_t=1.0, strength=3.0, rescale=0.0, interval=(0.0, 1.0)),
    "negative_only": dict(steps=4, rescale_t=1.0, strength=0.0, rescale=0.7, interval=(0.0, 1.0)),
    "interval_misses": dict(steps=4, rescale_t=1.0, strength=7.5, rescale=0.7, interval=(2.0, 3.0)),
}


def test_model_velocity_is_nonzero_and_nonlinear_in_cond(setup):
    model, views, _, noise = setup
    t = torch.tensor([500.0])
    v0, v1 = model(noise, t, views[0]), model(noise, t, views[1])
    v_mid = model(noise, t, (views[0] + views[1]) / 2)
    assert v0.abs().mean() > 0.05
    assert (v0 - v1).abs().max() > 0.05
    assert (v_mid - (v0 + v1) / 2).abs().max() > 1e-3


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", MODES)
def test_one_view_is_trellis2_sampler(setup, mode, case):
    model, views, neg, noise = setup
    params = CASES[case]
    expected = reference_sample(model, noise, views[:1], neg, mode="stochastic", **params)
    exact = run(model, noise, views[:1], neg, mode=mode, max_batch=1, **params)
    batched = run(model, noise, views[:1], neg, mode=mode, **params)
    assert torch.equal(exact, expected)
    torch.testing.assert_close(batched, expected, **TOL)
    assert (expected - noise).abs().max() > 0.1


@pytest.mark.parametrize("case", ["sparse_structure", "shape_slat", "tex_slat", "cfg_everywhere"])
@pytest.mark.parametrize("mode", MODES)
def test_many_views_match_loop_reference(setup, mode, case):
    model, views, neg, noise = setup
    expected = reference_sample(model, noise, views[:3], neg, mode=mode, **CASES[case])
    torch.testing.assert_close(run(model, noise, views[:3], neg, mode=mode, **CASES[case]), expected, **TOL)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_identical_views_equal_one_view(setup, mode, n):
    model, views, neg, noise = setup
    params = CASES["sparse_structure"]
    one = run(model, noise, views[:1], neg, mode=mode, max_batch=1, **params)
    many = run(model, noise, [views[0].clone() for _ in range(n)], neg, mode=mode, **params)
    torch.testing.assert_close(many, one, **TOL)


@pytest.mark.parametrize("order", [[1, 2, 0], [2, 1, 0], [0, 2, 1]])
@pytest.mark.parametrize("mode", ["multidiffusion", "concat"])
def test_view_order_does_not_matter(setup, mode, order):
    model, views, neg, noise = setup
    params = CASES["shape_slat"]
    base = run(model, noise, views[:3], neg, mode=mode, **params)
    permuted = run(model, noise, [views[i] for i in order], neg, mode=mode, **params)
    torch.testing.assert_close(permuted, base, **TOL)
    assert (base - run(model, noise, views[:1], neg, mode=mode, **params)).abs().max() > 1e-2


# --- concat ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_batch", [1, None])
@pytest.mark.parametrize("case", CASES)
def test_concat_of_one_view_is_the_single_view_sampler_bit_for_bit(setup, case, max_batch):
    model, views, neg, noise = setup
    single = run(model, noise, views[:1], neg, mode="stochastic", max_batch=max_batch, **CASES[case])
    concat = run(model, noise, views[:1], neg, mode="concat", max_batch=max_batch, **CASES[case])
    assert torch.equal(concat, single)


@pytest.mark.parametrize("n", [2, 4])
def test_concat_negative_pass_is_the_one_view_negative(setup, n):
    # The negative pass attends to one view's length of zeros, not to N copies of them.
    model, views, neg, noise = setup
    recorder = Recorder(model, views[:n], neg)
    denoiser = guided(recorder, views[:n], neg, mode="concat", strength=0.0, rescale=0.0,
                      interval=(0.0, 1.0), sigma_min=SIGMA_MIN, batcher=DenseBatcher())
    v = denoiser(noise, 0.5, 0)
    assert [call.labels for call in recorder.calls] == [["neg"]]
    assert torch.equal(v, model(noise, torch.tensor([500.0]), neg))
    # not vacuous: the negative's velocity is far from the views'
    assert (v - model(noise, torch.tensor([500.0]), torch.cat(views[:n], dim=1))).abs().max() > 1e-2


def test_duplicated_cond_tokens_leave_the_attention_unchanged(setup):
    # The property concat rests on, at the attention itself: every copy's softmax weight divides by N.
    model, views, neg, _ = setup
    cells = torch.randn(1, 6, 16, dtype=torch.float64)
    for cond in (views[0], neg):
        once = model.cross(cells, cond)
        torch.testing.assert_close(model.cross(cells, torch.cat([cond] * 3, dim=1)), once, **TOL)
        shuffled = torch.cat([cond] * 2, dim=1)[:, torch.randperm(2 * COND_TOKENS)]
        torch.testing.assert_close(model.cross(cells, shuffled), once, **TOL)


def test_each_sampling_call_concatenates_its_own_views(setup):
    # The cascade conditions its two shape passes on tokens of two resolutions (more tokens at 1024).
    model, _, _, noise = setup
    seen = []

    def spy(x, t, cond):
        seen.append(tuple(cond.shape))
        return model(x, t, cond)

    for tokens in (COND_TOKENS, 2 * COND_TOKENS + 1):
        views = [torch.randn(1, tokens, COND_DIM, dtype=torch.float64) for _ in range(3)]
        neg = torch.zeros_like(views[0])
        run(spy, noise, views, neg, mode="concat", **CASES["cfg_everywhere"])
    # a dense model: the all-views pass and the one-view negative in calls of their own
    assert sorted(set(seen)) == [(1, COND_TOKENS, COND_DIM), (1, 2 * COND_TOKENS + 1, COND_DIM),
                                 (1, 3 * COND_TOKENS, COND_DIM), (1, 3 * (2 * COND_TOKENS + 1), COND_DIM)]


@pytest.mark.parametrize("max_batch", [None, 2, 3, 5])
@pytest.mark.parametrize(("mode", "n"), [("stochastic", 3), ("multidiffusion", 1), ("multidiffusion", 4),
                                         ("concat", 4)])
def test_batched_equals_one_pass_at_a_time(setup, mode, n, max_batch):
    model, views, neg, noise = setup
    torch.manual_seed(1)
    textured = TinyFlow(concat_channels=2).double()
    concat = {"concat_cond": torch.randn(1, 2, 2, 2, 2, dtype=torch.float64)}
    for flow, kwargs in [(model, None), (textured, concat)]:
        params = CASES["sparse_structure"]
        common = dict(mode=mode, model_kwargs=kwargs, **params)
        single = run(flow, noise, views[:n], neg, max_batch=1, **common)
        chunked = run(flow, noise, views[:n], neg, max_batch=max_batch, **common)
        torch.testing.assert_close(chunked, single, **TOL)


def test_multidiffusion_applies_guidance_rescale(setup):
    model, views, neg, noise = setup
    params = dict(CASES["sparse_structure"], rescale=0.7)
    rescaled = run(model, noise, views[:3], neg, mode="multidiffusion", **params)
    plain = run(model, noise, views[:3], neg, mode="multidiffusion", **dict(params, rescale=0.0))
    expected = reference_sample(model, noise, views[:3], neg, mode="multidiffusion", **params)
    torch.testing.assert_close(rescaled, expected, **TOL)
    assert (rescaled - plain).abs().max() > 1e-2


def test_multidiffusion_uses_trellis2_cfg_not_v1(setup):
    # v1's (1 + s) pos - s neg at s = 7.5 equals TRELLIS.2's convention at s = 8.5: it must not match.
    model, views, neg, noise = setup
    params = dict(CASES["cfg_everywhere"], strength=7.5)
    ours = run(model, noise, views[:2], neg, mode="multidiffusion", **params)
    v1_params = dict(params, strength=8.5)
    v1_like = reference_sample(model, noise, views[:2], neg, mode="multidiffusion", **v1_params)
    expected = reference_sample(model, noise, views[:2], neg, mode="multidiffusion", **params)
    torch.testing.assert_close(ours, expected, **TOL)
    assert (ours - v1_like).abs().max() > 1e-2


def test_weights_are_normalised(setup):
    model, views, neg, noise = setup
    params = CASES["shape_slat"]
    weighted = run(model, noise, views[:2], neg, mode="multidiffusion", weights=[2.0, 6.0], **params)
    expected = reference_sample(model, noise, views[:2], neg, mode="multidiffusion", weights=[0.25, 0.75],
                                **params)
    equal = run(model, noise, views[:2], neg, mode="multidiffusion", **params)
    torch.testing.assert_close(weighted, expected, **TOL)
    assert (weighted - equal).abs().max() > 1e-3


# --- which passes run ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("mode", "n", "max_batch", "strength", "calls_per_step", "labels_per_step"),
    [
        ("stochastic", 3, None, 7.5, [2], lambda i: [[i % 3, "neg"]]),
        ("multidiffusion", 3, None, 7.5, [4], lambda i: [[0, 1, 2, "neg"]]),
        ("multidiffusion", 3, 3, 7.5, [3, 1], lambda i: [[0, 1, 2], ["neg"]]),
        ("multidiffusion", 3, 2, 7.5, [2, 2], lambda i: [[0, 1], [2, "neg"]]),
        ("multidiffusion", 3, None, 1.0, [3], lambda i: [[0, 1, 2]]),
        ("stochastic", 3, None, 1.0, [1], lambda i: [[i % 3]]),
        ("multidiffusion", 3, None, 0.0, [1], lambda i: [["neg"]]),
        ("stochastic", 3, None, 0.0, [1], lambda i: [["neg"]]),
        ("concat", 3, None, 7.5, [1, 1], lambda i: [["all"], ["neg"]]),
        ("concat", 3, 1, 7.5, [1, 1], lambda i: [["all"], ["neg"]]),
        ("concat", 3, None, 1.0, [1], lambda i: [["all"]]),
        ("concat", 3, None, 0.0, [1], lambda i: [["neg"]]),
        ("concat", 1, None, 7.5, [2], lambda i: [[0, "neg"]]),
    ],
)
def test_passes_per_step(setup, mode, n, max_batch, strength, calls_per_step, labels_per_step):
    model, views, neg, noise = setup
    recorder = Recorder(model, views[:n], neg)
    ts = time_grid(5)
    denoiser = guided(recorder, views[:n], neg, mode=mode, strength=strength, rescale=0.7,
                      interval=(0.0, 1.0), sigma_min=SIGMA_MIN, batcher=DenseBatcher(), max_batch=max_batch)
    sample_flow_euler(denoiser, noise, ts, sigma_min=SIGMA_MIN)
    per_step = len(calls_per_step)
    assert [c.rows for c in recorder.calls] == calls_per_step * 5
    for i in range(5):
        calls = recorder.calls[i * per_step:(i + 1) * per_step]
        assert [c.labels for c in calls] == labels_per_step(i)
        for c in calls:
            assert torch.equal(c.t, torch.full((c.rows,), 1000 * ts[i], dtype=torch.float32))


@pytest.mark.parametrize("mode", MODES)
def test_strength_identities(setup, mode):
    model, views, neg, noise = setup
    params = dict(CASES["cfg_everywhere"])
    cond_only = reference_sample(model, noise, views[:3], neg, mode=mode, **dict(params, strength=1.0))
    neg_only = reference_sample(model, noise, [neg], neg, mode="stochastic", **dict(params, strength=1.0))
    torch.testing.assert_close(run(model, noise, views[:3], neg, mode=mode, **dict(params, strength=1.0)),
                               cond_only, **TOL)
    torch.testing.assert_close(run(model, noise, views[:3], neg, mode=mode, **dict(params, strength=0.0)),
                               neg_only, **TOL)
    assert (cond_only - neg_only).abs().max() > 1e-2


def test_guidance_interval_edges_are_inclusive(setup):
    model, views, neg, noise = setup
    ts = time_grid(5, 3.0)
    recorder = Recorder(model, views[:2], neg)
    denoiser = guided(recorder, views[:2], neg, mode="multidiffusion", strength=7.5, rescale=0.7,
                      interval=(ts[3], ts[1]), sigma_min=SIGMA_MIN, batcher=DenseBatcher())
    sample_flow_euler(denoiser, noise, ts, sigma_min=SIGMA_MIN)
    guided_steps = [i for i, call in enumerate(recorder.calls) if "neg" in call.labels]
    assert guided_steps == [1, 2, 3]


def test_stochastic_schedule_restarts_per_sampling_call(setup):
    # The cascade samples the shape latent twice, then the texture: each call must start at view 0,
    # and a longer second call must not run out of views (TRELLIS v1's popped list did).
    model, views, neg, noise = setup
    recorder = Recorder(model, views[:3], neg)
    denoiser = guided(recorder, views[:3], neg, mode="stochastic", strength=1.0, rescale=0.0,
                      interval=(0.0, 1.0), sigma_min=SIGMA_MIN, batcher=DenseBatcher())
    schedules = []
    for steps in (4, 7, 4):
        recorder.calls.clear()
        sample_flow_euler(denoiser, noise, time_grid(steps), sigma_min=SIGMA_MIN)
        schedules.append([label for call in recorder.calls for label in call.labels])
    assert schedules == [[0, 1, 2, 0], [0, 1, 2, 0, 1, 2, 0], [0, 1, 2, 0]]


# --- argument checks -----------------------------------------------------------------------------

GOOD = dict(mode="multidiffusion", strength=7.5, rescale=0.7, interval=(0.6, 1.0), sigma_min=SIGMA_MIN,
            batcher=DenseBatcher())
BAD_ARGS = [
    (dict(mode="fast"), 2, "mode: 'fast' is not one of 'stochastic', 'multidiffusion', 'concat'"),
    (dict(), 0, "views: needs at least one view condition"),
    (dict(weights=[1.0]), 2, r"weights: expected 2 values \(one per view\), got 1"),
    (dict(weights=[1.0, 0.0]), 2, r"weights\[1\]: 0.0 is not a positive finite number"),
    (dict(weights=[-1.0, 1.0]), 2, r"weights\[0\]: -1.0 is not a positive finite number"),
    (dict(weights=[1.0, float("inf")]), 2, r"weights\[1\]: inf is not a positive finite number"),
    (dict(weights=[1.0, float("nan")]), 2, r"weights\[1\]: nan is not a positive finite number"),
    (dict(weights=[1.0, "x"]), 2, r"weights\[1\]: 'x' is not a positive finite number"),
    (dict(mode="stochastic", weights=[1.0, 1.0]), 2, "weights: only the 'multidiffusion' mode weighs views"),
    (dict(mode="concat", weights=[1.0, 1.0]), 2, "weights: only the 'multidiffusion' mode weighs views, not 'concat'"),
]


@pytest.mark.parametrize(("overrides", "n", "message"), BAD_ARGS)
def test_guided_rejects(setup, overrides, n, message):
    model, views, neg, _ = setup
    with pytest.raises(ValueError, match=message):
        guided(model, views[:n], neg, **dict(GOOD, **overrides))


# --- a latent that is not a torch.Tensor -----------------------------------------------------------

class Ragged:
    """Stand-in for trellis2's SparseTensor: feature rows, each with a batch index; not a torch.Tensor.

    Like SparseTensor it has ``shape[0]`` = batch size, arithmetic with scalars, its own kind and
    per-sample ``[B, 1]`` tensors, and a population ``std`` per sample.
    """

    def __init__(self, feats, batch, size):
        self.feats, self.batch, self.size = feats, batch, size

    @property
    def shape(self):
        return torch.Size([self.size, self.feats.shape[1]])

    @property
    def ndim(self):
        return 2

    @property
    def device(self):
        return self.feats.device

    def _apply(self, other, op):
        if isinstance(other, Ragged):
            other = other.feats
        elif isinstance(other, torch.Tensor) and other.ndim == 2:
            other = other[self.batch]
        return Ragged(op(self.feats, other), self.batch, self.size)

    def __add__(self, other):
        return self._apply(other, torch.add)

    def __sub__(self, other):
        return self._apply(other, torch.sub)

    def __rsub__(self, other):
        return self._apply(other, lambda a, b: b - a)

    def __mul__(self, other):
        return self._apply(other, torch.mul)

    def __truediv__(self, other):
        return self._apply(other, torch.div)

    __radd__, __rmul__ = __add__, __mul__

    def std(self, dim, keepdim=False):
        assert list(dim) == [1] and keepdim, "trellis2 asks for the std over every dim but the batch"

        def mean(values):
            total = torch.zeros(self.size, dtype=values.dtype).index_add_(0, self.batch, values.sum(1))
            return (total / (torch.bincount(self.batch, minlength=self.size) * values.shape[1]))[:, None]

        return (mean(self.feats ** 2) - mean(self.feats) ** 2).sqrt()


class RaggedBatcher:
    """A custom Batcher: batch indices are offset on cat and shifted back on split; conds of different
    lengths go to the model as a list of ``[L_i, C]``, as trellis2's sparse flows take them (``RaggedConds``)."""

    def cat_conds(self, conds):
        return [cond[0] for cond in conds]

    def cat(self, items):
        offsets = np.cumsum([0] + [item.size for item in items]).tolist()
        batch = [item.batch + off for item, off in zip(items, offsets[:-1], strict=True)]
        return Ragged(torch.cat([item.feats for item in items]), torch.cat(batch), offsets[-1])

    def split(self, batched, n):
        size = batched.size // n
        parts = []
        for k in range(n):
            mask = (batched.batch >= k * size) & (batched.batch < (k + 1) * size)
            parts.append(Ragged(batched.feats[mask], batched.batch[mask] - k * size, size))
        return parts


class RaggedFlow(torch.nn.Module):
    """Each row attends to its own sample's cond tokens; takes ``concat_cond`` as the texture flow does.

    ``cond`` is ``[B, L, C]``, or a list of B ``[L_i, C]`` of different lengths (trellis2's ``VarLenTensor`` cond).
    """

    def __init__(self, channels=3, concat_channels=2, hidden=16):
        super().__init__()
        self.query = torch.nn.Linear(channels + concat_channels + 1, hidden)
        self.key = torch.nn.Linear(COND_DIM, hidden)
        self.value = torch.nn.Linear(COND_DIM, hidden)
        self.out = torch.nn.Linear(hidden + channels, channels)
        self.seen_concat, self.seen_lengths = [], []

    def forward(self, x, t, cond, concat_cond):
        assert isinstance(x, Ragged) and isinstance(concat_cond, Ragged)
        assert x.size == concat_cond.size == len(cond) == t.shape[0]
        assert torch.equal(x.batch, concat_cond.batch)
        self.seen_concat.append(concat_cond)
        self.seen_lengths.append([c.shape[-2] for c in cond])
        time = (t.to(x.feats.dtype) / 1000)[x.batch, None]
        query = self.query(torch.cat([x.feats, concat_cond.feats, time], -1))
        hidden = torch.empty(query.shape, dtype=query.dtype)
        for sample, tokens in enumerate(cond):
            rows = x.batch == sample
            keys, values = self.key(tokens), self.value(tokens)
            attn = torch.softmax(query[rows] @ keys.T / 4.0, -1)
            hidden[rows] = torch.tanh(attn @ values)
        return Ragged(self.out(torch.cat([hidden, x.feats], -1)), x.batch, x.size)


@pytest.mark.parametrize("mode", MODES)
def test_non_tensor_latent_with_custom_batcher(mode):
    torch.manual_seed(2)
    model = RaggedFlow().double()
    views = [torch.randn(1, COND_TOKENS, COND_DIM, dtype=torch.float64) for _ in range(3)]
    neg = torch.zeros(1, COND_TOKENS, COND_DIM, dtype=torch.float64)
    one_sample = torch.zeros(7, dtype=torch.long)
    noise = Ragged(torch.randn(7, 3, dtype=torch.float64), one_sample, 1)
    shape = Ragged(torch.randn(7, 2, dtype=torch.float64), one_sample, 1)
    params = CASES["shape_slat"]
    common = dict(mode=mode, batcher=RaggedBatcher(), model_kwargs={"concat_cond": shape}, **params)

    batched = run(model, noise, views, neg, **common)
    passes = 4 if mode == "multidiffusion" else 2
    first = model.seen_concat[0]
    assert first.size == passes
    for part in RaggedBatcher().split(first, passes):
        assert torch.equal(part.feats, shape.feats)
    if mode == "concat":  # all views' tokens and the one-view negative, unpadded, in one call
        assert model.seen_lengths[0] == [3 * COND_TOKENS, COND_TOKENS]

    model.seen_concat.clear()
    single = run(model, noise, views, neg, max_batch=1, **common)
    assert {seen.size for seen in model.seen_concat} == {1}

    expected = reference_sample(model, noise, views, neg, mode=mode, concat_cond=shape, **params)
    assert isinstance(batched, Ragged) and isinstance(single, Ragged)
    assert torch.equal(single.feats, expected.feats)
    torch.testing.assert_close(batched.feats, expected.feats, **TOL)
    assert (expected.feats - noise.feats).abs().max() > 0.1
