"""Property-based tests (hypothesis) of every op against its pure-PyTorch reference.

Shapes include empty ones, d = 1, n != m and sizes across the CPU kernels' blocks: the MMD's
512-row tiles and 256-quadruple linear chunks, CORAL's loss blocks of 2^20 / d rows, the 256-event
chunks of hits_to_image and 64-event chunks of shower_features, hits_to_image's 40500-cell rows
(global accumulator on CUDA). Values are float32 or float64, of ordinary, huge or subnormal
magnitude, with NaN and +-inf at drawn positions; inputs are non-contiguous views whose gaps hold NaN
or out-of-range sentinels, so a kernel that read a gap would show it. Where the reference is finite
the op must match it within tolerance; where it is not, the op must give the same NaN / +-inf
pattern or raise a clean error (ValueError, IndexError or TypeError naming the op). Gradients are
compared with the reference's autograd on finite inputs of ordinary magnitude.

The profiles are in conftest.py: "ci" by default, HYPOTHESIS_PROFILE=fuzz (`make fuzz`) for thousands
of fresh examples per test. The examples run per op are printed at the end of the session.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sim2real_fast as s2r
from sim2real_fast import reference
from sim2real_fast.ops.mmd import DEFAULT_KERNEL_SCALES, resolve_kernels

from helpers import DEVICES, tolerances

FLOAT_DTYPES = st.sampled_from([torch.float32, torch.float64])
MAGNITUDES = ("unit", "small", "large", "huge", "tiny")
# "huge" stays clear of overflow in what an op and its reference form from the values: sums ("sum":
# hits_to_image, grad_reverse), energies times squared coordinates ("moment": shower_features),
# squared distances ("square": mmd), squared covariances ("fourth": coral). "tiny" is subnormal.
_EXTREMES = {
    "sum": {torch.float32: (1e30, 1e-40), torch.float64: (1e200, 1e-310)},
    "moment": {torch.float32: (1e25, 1e-40), torch.float64: (1e190, 1e-310)},
    "square": {torch.float32: (1e15, 1e-40), torch.float64: (1e100, 1e-310)},
    "fourth": {torch.float32: (1e7, 1e-40), torch.float64: (1e70, 1e-310)},
}
SPECIALS = (math.nan, math.inf, -math.inf)
LAYOUTS_1D = ("contiguous", "step", "offset")
LAYOUTS_2D = ("contiguous", "column_major", "row_step", "col_step", "offset", "expanded")
SEEDS = st.integers(0, 2**32 - 1)


def scale_of(magnitude: str, dtype: torch.dtype, growth: str) -> float:
    huge, tiny = _EXTREMES[growth][dtype]
    return {"unit": 1.0, "small": 1e-3, "large": 1e3, "huge": huge, "tiny": tiny}[magnitude]


@st.composite
def values(draw, shape, dtype, scale, *, positive=False, sparse=False, specials=True):
    """(tensor, finite): normal values times `scale` (absolute values if positive; about half of
    them 0 if sparse), with NaN / +-inf at a few drawn positions when specials."""
    g = torch.Generator().manual_seed(draw(SEEDS))
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    if positive:
        t = t.abs()
    if sparse:
        t = t * (torch.rand(shape, generator=g) < 0.5)
    t = (t * scale).to(dtype)
    n_special = draw(st.sampled_from((0, 0, 0, 1, 2))) if specials and t.numel() else 0
    for _ in range(n_special):
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from(SPECIALS))
    return t, n_special == 0


def lay_out(t: torch.Tensor, layout: str, gap) -> torch.Tensor:
    """A view of t in another memory layout: transposed storage, every other row or column of a larger
    buffer whose gaps hold `gap`, or a storage offset; "expanded" repeats t's first row with stride 0
    (so its values change). Op and reference always get the same view."""
    if layout == "column_major":
        return t.T.contiguous().T
    if layout in ("step", "row_step"):
        big = t.new_full((2 * t.shape[0] + 1, *t.shape[1:]), gap)
        big[1::2] = t
        return big[1::2]
    if layout == "col_step":
        big = t.new_full((t.shape[0], 2 * t.shape[1] + 1), gap)
        big[:, 1::2] = t
        return big[:, 1::2]
    if layout == "offset":
        big = t.new_full((t.numel() + 3,), gap)
        big[3:] = t.reshape(-1)
        return big[3:].view(t.shape)
    if layout == "expanded":
        return t[:1].expand(t.shape)
    return t


def assert_agree(got, expected, *, rtol, atol, what, mask=None):
    """got has expected's shape and dtype and, where `mask` (default everywhere), its NaN and +-inf
    pattern and its finite values within atol + rtol |expected| (atol may be a broadcast tensor) plus
    4 steps of the dtype's subnormal spacing."""
    assert got.shape == expected.shape and got.dtype == expected.dtype, (what, got.shape, expected.shape, got.dtype)
    finfo = torch.finfo(expected.dtype)
    atol = atol + 4 * finfo.tiny * finfo.eps
    got, expected = got.detach().cpu().double(), expected.detach().cpu().double()
    if mask is not None:
        mask = mask.cpu().expand(expected.shape)
        got, expected = got[mask], expected[mask]
        if torch.is_tensor(atol):
            atol = atol.cpu().double().expand(mask.shape)[mask]
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan), f"{what}: NaN at {got.isnan().flatten().nonzero().flatten().tolist()}, reference at {nan.flatten().nonzero().flatten().tolist()}"
    inf = expected.isinf()
    assert torch.equal(got.isinf(), inf) and torch.equal(got[inf], expected[inf]), f"{what}: +-inf differ: {got[inf | got.isinf()].tolist()} vs {expected[inf | got.isinf()].tolist()}"
    bound = atol + rtol * expected.abs()
    bad = ~((got - expected).abs() <= bound) & ~(nan | inf)
    if bad.any():
        i = int(((got - expected).abs() - bound).nan_to_num(0.0).argmax())
        raise AssertionError(f"{what}: {int(bad.sum())} of {expected.numel()} values differ; worst: {got.flatten()[i].item()!r} vs reference {expected.flatten()[i].item()!r} (tolerance {bound.flatten()[i].item():.3g})")


def assert_clean_error(error: BaseException, op: str) -> None:
    assert isinstance(error, (ValueError, IndexError, TypeError)) and str(error).startswith(f"sim2real_fast.{op}"), repr(error)


def finite_max(t: torch.Tensor) -> float:
    """The largest finite |value| of t (0 if none)."""
    t = t.detach().double().abs()
    t = t[torch.isfinite(t)]
    return t.max().item() if t.numel() else 0.0


def grad_tolerance(dtype, expected: torch.Tensor) -> dict:
    rtol = tolerances(dtype)["rtol"]
    return {"rtol": rtol, "atol": rtol * finite_max(expected)}


# ---- mmd ------------------------------------------------------------------------------------------

ESTIMATORS = ("unbiased", "biased", "linear")
MIN_SAMPLES = {"unbiased": 2, "biased": 1, "linear": 2}
# Few, some, and across the CPU's 512-row tiles and 256-quadruple (512-row) linear chunks.
SAMPLES = st.integers(0, 12) | st.integers(13, 70) | st.sampled_from((255, 257, 511, 512, 513, 515, 1023, 1025, 1027))


@st.composite
def mmd_problems(draw):
    dtype = draw(FLOAT_DTYPES)
    estimator = draw(st.sampled_from(ESTIMATORS))
    n, m = draw(SAMPLES), draw(SAMPLES)
    d = draw(st.integers(0, 4)) if max(n, m) > 70 else draw(st.integers(0, 3) | st.integers(4, 24))
    magnitude = draw(st.sampled_from(MAGNITUDES))
    scale = scale_of(magnitude, dtype, "square")
    x, _ = draw(values((n, d), dtype, scale))
    y, _ = draw(values((m, d), dtype, scale))
    y = (y.double() * 1.3 + 0.5 * scale).to(dtype)
    h = 2.0 * max(d, 1) * scale * scale  # about the mean squared distance
    kind = draw(st.sampled_from(("mean", "median", "float", "tensor", "doubling")))
    finfo = torch.finfo(dtype)
    if not finfo.tiny * 1e3 < h < finfo.max * 1e-3:
        kind = draw(st.sampled_from(("mean", "median")))
    kwargs, bad = {"estimator": estimator}, ()
    if kind in ("mean", "median", "float"):
        kwargs["bandwidth"] = kind if kind != "float" else h * draw(st.floats(0.05, 20.0))
        kwargs["kernel_scales"] = draw(st.sampled_from((DEFAULT_KERNEL_SCALES, (1.0,), (0.5, 3.0), (0.3, 0.3, 7.0))))
        k = len(kwargs["kernel_scales"])
    else:
        k = draw(st.integers(1, 6))
        factors = [2.0 ** (q - k // 2) for q in range(k)] if kind == "doubling" else draw(st.lists(st.floats(0.05, 20.0), min_size=k, max_size=k))
        sigma2 = [h * f for f in factors]
        if draw(st.integers(0, 7)) == 0:
            sigma2[draw(st.integers(0, k - 1))] = draw(st.sampled_from((0.0, -h, math.nan, math.inf)))
            bad = ("sigma2",)
        kwargs["bandwidth"] = torch.tensor(sigma2, dtype=dtype)
    if draw(st.booleans()):
        weights = draw(st.lists(st.sampled_from((0.0, 0.1, 0.5, 1.0, 2.5)), min_size=k, max_size=k))
        if draw(st.integers(0, 7)) == 0:
            weights[draw(st.integers(0, k - 1))] = draw(st.sampled_from((-0.5, math.nan, math.inf)))
            bad = (*bad, "weights")
        kwargs["weights"] = weights
    layouts = draw(st.sampled_from(LAYOUTS_2D)), draw(st.sampled_from(LAYOUTS_2D))
    return {"x": x, "y": y, "kwargs": kwargs, "bad": bad, "layouts": layouts, "dtype": dtype,
            "magnitude": magnitude, "ordinary": magnitude in ("unit", "small", "large"),
            "grad": draw(st.sampled_from(("x", "y", "both")))}


@pytest.mark.parametrize("device", DEVICES)
@given(p=mmd_problems())
def test_mmd_matches_reference(device, p, fuzz_examples):
    x, y = (lay_out(t.to(device), layout, math.nan) for t, layout in zip((p["x"], p["y"]), p["layouts"]))
    kwargs = {key: v.to(device) if torch.is_tensor(v) else v for key, v in p["kwargs"].items()}
    estimator, dtype = kwargs["estimator"], p["dtype"]
    too_few = min(x.shape[0], y.shape[0]) < MIN_SAMPLES[estimator]
    if too_few or p["bad"]:
        with pytest.raises(ValueError) as caught:
            s2r.mmd(x, y, **kwargs)
        assert_clean_error(caught.value, "mmd")
        assert any(name in str(caught.value) for name in (("samples",) if too_few else p["bad"])), caught.value
        fuzz_examples["mmd"]["clean error"] += 1
        return
    sigma2, w = resolve_kernels(x, y, kwargs["bandwidth"], kwargs.get("kernel_scales", DEFAULT_KERNEL_SCALES), kwargs.get("weights"))
    # Kernel values are at most sum(w): the scale of every pair sum and of their rounding.
    rtol, atol = (2e-4, 1e-5) if dtype == torch.float32 else (1e-9, 1e-12)
    value_tol = {"rtol": rtol, "atol": atol * max(w.sum().item(), 1e-3)}
    # Squared distances are known to about eps |z - mean|^2; a bandwidth below that (a heuristic
    # clamped for identical samples) makes the kernel of near pairs rounding noise on either side.
    z = torch.cat([x, y]).double()
    spread = (z - z.mean(0)).square().sum(1).max().item() if z.numel() else 0.0
    finite = bool(x.isfinite().all() and y.isfinite().all())  # an expanded view may drop the non-finite rows
    if finite and 8 * torch.finfo(dtype).eps * spread > 1e-3 * sigma2.min().item():
        value = s2r.mmd(x, y, **kwargs)
        assert value.isfinite() and value.abs() <= 2 * w.sum() * (1 + rtol), value
        fuzz_examples["mmd"]["value (bandwidth below rounding: bounds only)"] += 1
        return
    # The oracle is the reference in float64 on the inputs upcast exactly (in float32 its autograd
    # turns the rounding of the zero distances i = j into gradient noise of eps sum_k w_k / sigma2_k),
    # except for subnormal inputs, whose distances only float64 resolves.
    wide = torch.float64 if p["magnitude"] != "tiny" else dtype
    exact = {key: v.to(wide) if torch.is_tensor(v) else v for key, v in kwargs.items()}
    used = (x.to(wide), y.to(wide))
    if estimator == "linear" and not isinstance(kwargs["bandwidth"], str):
        rows = min(x.shape[0], y.shape[0]) // 2 * 2
        used = (used[0][:rows], used[1][:rows])  # the rows the estimator reads (a heuristic bandwidth reads all)
    expected = reference.mmd(*used, **exact).to(dtype)
    assert_agree(s2r.mmd(x, y, **kwargs), expected, what="mmd", **value_tol)
    if not (finite and p["ordinary"]) or p["layouts"][0] == "expanded" == p["layouts"][1]:
        fuzz_examples["mmd"]["value"] += 1
        return
    need = (p["grad"] in ("x", "both"), p["grad"] in ("y", "both"))
    leaves = [[t.detach().requires_grad_(r) for t, r in zip((x, y), need)] for _ in range(2)]
    leaves.insert(1, [t.detach().to(wide).requires_grad_(r) for t, r in zip((x, y), need)])
    fused = s2r.mmd(*leaves[0], **kwargs)  # value and gradients in one pass (_mmd_with_grad)
    ref = reference.mmd(*leaves[1], **exact)
    plain = torch.ops.sim2real_fast.mmd(*leaves[2], sigma2, w, estimator)  # backward recomputes (_mmd_backward)
    assert_agree(fused, expected, what="mmd (fused with gradients)", **value_tol)
    grads = [torch.autograd.grad(out * 1.7, [t for t in ts if t.requires_grad]) for out, ts in zip((fused, ref, plain), leaves)]
    for got, from_backward, want in zip(grads[0], grads[2], (g.to(dtype) for g in grads[1])):
        assert_agree(got, want, what="mmd gradient (fused)", **grad_tolerance(dtype, want))
        assert_agree(from_backward, want, what="mmd gradient (_mmd_backward)", **grad_tolerance(dtype, want))
    fuzz_examples["mmd"]["value+grad"] += 1


# ---- coral ----------------------------------------------------------------------------------------


def covariance(x: torch.Tensor) -> torch.Tensor:
    """The reference's covariance (sim2real_fast.reference.coral)."""
    xc = x - x.mean(0)
    return xc.T @ xc / (x.shape[0] - 1)


@st.composite
def coral_problems(draw):
    dtype = draw(FLOAT_DTYPES)
    # d from 1020 to 1040 straddles the loss's blocks of 2^20 / d rows (two blocks from d = 1025 on).
    d = draw(st.integers(1, 40) | st.integers(0, 40) | st.integers(1020, 1040))
    rows = st.integers(2, 8) | st.integers(0, 8) if d > 40 else st.integers(2, 80) | st.integers(0, 80)
    n, m = draw(rows), draw(rows)
    magnitude = draw(st.sampled_from(MAGNITUDES))
    scale = scale_of(magnitude, dtype, "fourth")
    x, _ = draw(values((n, d), dtype, scale))
    y, _ = draw(values((m, d), dtype, scale))
    y = (y.double() * 0.7 + 0.5 * scale).to(dtype)
    layouts = draw(st.sampled_from(LAYOUTS_2D)), draw(st.sampled_from(LAYOUTS_2D))
    return {"x": x, "y": y, "layouts": layouts, "dtype": dtype,
            "ordinary": magnitude in ("unit", "small", "large"), "grad": draw(st.sampled_from(("x", "y", "both"))),
            "seed": draw(SEEDS)}


@pytest.mark.parametrize("device", DEVICES)
@given(p=coral_problems())
def test_coral_matches_reference(device, p, fuzz_examples):
    x, y = (lay_out(t.to(device), layout, math.nan) for t, layout in zip((p["x"], p["y"]), p["layouts"]))
    (n, d), m, dtype = x.shape, y.shape[0], p["dtype"]
    if min(n, m) < 2 or d < 1:
        with pytest.raises(ValueError) as caught:
            s2r.coral(x, y)
        assert_clean_error(caught.value, "coral")
        fuzz_examples["coral"]["clean error"] += 1
        return
    loss, cov_diff = torch.ops.sim2real_fast.coral(x, y)
    # Rounding scales with the raw second moments (centring cancels, it does not create accuracy).
    moment = sum(finite_max(t.double().square().sum(0) / (t.shape[0] - 1)) for t in (x, y))
    rtol = tolerances(dtype)["rtol"]
    assert_agree(cov_diff, covariance(x) - covariance(y), rtol=rtol, atol=rtol * moment, what="coral cov_diff")
    assert_agree(loss, reference.coral(x, y), rtol=rtol, atol=rtol * moment * moment, what="coral loss")
    assert_agree(s2r.coral(x, y), loss, rtol=0, atol=0, what="coral wrapper")
    if not (bool(x.isfinite().all() and y.isfinite().all()) and p["ordinary"]) or "expanded" in p["layouts"]:
        fuzz_examples["coral"]["value"] += 1
        return
    need = (p["grad"] in ("x", "both"), p["grad"] in ("y", "both"))
    ours = [t.detach().requires_grad_(r) for t, r in zip((x, y), need)]
    theirs = [t.detach().requires_grad_(r) for t, r in zip((x, y), need)]
    g = torch.Generator().manual_seed(p["seed"])
    weight = torch.randn(d, d, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)  # not symmetric
    loss, cov_diff = torch.ops.sim2real_fast.coral(*ours)
    got = torch.autograd.grad(1.3 * loss + (cov_diff * weight).sum(), [t for t in ours if t.requires_grad])
    ref_cov_diff = covariance(theirs[0]) - covariance(theirs[1])
    want = torch.autograd.grad(1.3 * reference.coral(*theirs) + (ref_cov_diff * weight).sum(), [t for t in theirs if t.requires_grad])
    for a, b in zip(got, want):
        assert_agree(a, b, what="coral gradient", **grad_tolerance(dtype, b))
    fuzz_examples["coral"]["value+grad"] += 1


# ---- hits_to_image --------------------------------------------------------------------------------

NORMALIZE = (None, "log1p", "sum", "incident")
CORRUPTIONS = ("none",) * 5 + ("cell below 0", "cell beyond n_cells", "offsets decrease", "offsets below 0", "offsets beyond H")


@st.composite
def hits_problems(draw):
    dtype = draw(FLOAT_DTYPES)
    n_cells = draw(st.integers(0, 3) | st.integers(4, 70) | st.just(40500))
    n_events = draw(st.integers(0, 8) | st.integers(9, 40) | st.sampled_from((255, 256, 257)))
    if n_cells > 70:
        n_events = min(n_events, 4)
    g = torch.Generator().manual_seed(draw(SEEDS))
    counts = torch.randint(0, draw(st.sampled_from((0, 1, 5, 30))) + 1, (n_events,), generator=g)
    lead, trail = draw(st.integers(0, 3)), draw(st.integers(0, 3))  # hits outside every event
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]) + lead
    n_hits = int(offsets[-1]) + trail
    cell = torch.randint(0, max(n_cells, 1), (n_hits,), generator=g)
    normalize = draw(st.sampled_from(NORMALIZE))
    # Sums normalised by their total need no cancellation in it: kept values >= 0 (threshold >= 0).
    thresholds = (0.0, 0.5, 10.0, math.inf) if normalize == "sum" else (0.0, 0.5, -1.0, -1e30, math.inf, -math.inf, math.nan)
    threshold = draw(st.sampled_from(thresholds))
    magnitude = draw(st.sampled_from(MAGNITUDES))
    scale = scale_of(magnitude, dtype, "sum")
    energy, finite = draw(values((n_hits,), dtype, scale, positive=draw(st.booleans())))
    options = {"n_cells": n_cells, "normalize": normalize, "threshold": threshold * scale if math.isfinite(threshold) else threshold}
    if draw(st.booleans()):
        calibration, finite_c = draw(values((n_cells,), dtype, 1.0, positive=True))
        options["calibration"] = calibration + 0.5
        finite = finite and finite_c
    if draw(st.booleans()):
        options["dead"] = torch.rand(n_cells, generator=g) < 0.2
    if normalize == "incident":
        incident, finite_i = draw(values((n_events,), dtype, scale, positive=True))
        incident = incident + scale
        if n_events and draw(st.integers(0, 4)) == 0:
            incident[draw(st.integers(0, n_events - 1))] = draw(st.sampled_from((0.0, -scale)))
            finite_i = False
        options["incident_energy"] = incident
        finite = finite and finite_i
    corruption = draw(st.sampled_from(CORRUPTIONS))
    if corruption.startswith("cell") and n_hits:
        cell[draw(st.integers(0, n_hits - 1))] = -1 - draw(st.integers(0, 5)) if "below" in corruption else n_cells + draw(st.integers(0, 5))
    elif corruption.startswith("offsets"):
        i = draw(st.integers(0, n_events))
        offsets[i] = {"offsets decrease": int(offsets[max(i - 1, 0)]) - 1, "offsets below 0": -1 - draw(st.integers(0, 5)),
                      "offsets beyond H": n_hits + 1 + draw(st.integers(0, 5))}[corruption]
    offsets = offsets.to(draw(st.sampled_from((torch.int64, torch.int32))))
    cell = cell.to(draw(st.sampled_from((torch.int64, torch.int32))))
    layouts = {name: draw(st.sampled_from(LAYOUTS_1D)) for name in ("offsets", "cell", "energy", "calibration", "dead", "incident_energy")}
    return {"offsets": offsets, "cell": cell, "energy": energy, "options": options, "layouts": layouts, "dtype": dtype,
            "finite": finite, "ordinary": magnitude in ("unit", "small", "large"),
            "seed": draw(SEEDS)}


# Gap fillers: a kernel that read a gap would see an impossible offset, an out-of-range cell or NaN.
HITS_GAPS = {"offsets": 2**30, "cell": -7, "energy": math.nan, "calibration": math.nan, "dead": True, "incident_energy": math.nan}


@pytest.mark.parametrize("device", DEVICES)
@given(p=hits_problems())
def test_hits_to_image_matches_reference(device, p, fuzz_examples):
    laid = {name: lay_out(t.to(device), p["layouts"][name], HITS_GAPS[name])
            for name, t in {**p["options"], "offsets": p["offsets"], "cell": p["cell"], "energy": p["energy"]}.items() if torch.is_tensor(t)}
    options = {**p["options"], **{k: v for k, v in laid.items() if k in p["options"]}}
    args = (laid["offsets"], laid["cell"], laid["energy"])
    ref_args = (args[0].long(), *args[1:])
    try:
        expected = reference.hits_to_image(*ref_args, **options)
    except (IndexError, ValueError) as error:
        with pytest.raises(type(error)) as caught:
            s2r.hits_to_image(*args, **options)
        assert str(caught.value).splitlines()[0] == str(error)
        assert ("offsets[" if isinstance(error, ValueError) else "cell index") in str(error)
        fuzz_examples["hits_to_image"]["clean error"] += 1
        return
    got = s2r.hits_to_image(*args, **options)
    dtype, normalize = p["dtype"], options["normalize"]
    rtol = tolerances(dtype)["rtol"]
    # Per event: the divisor D (the total for "sum", the incident energy for "incident", else 1)
    # and the sum of |hit energy| (times the largest |calibration|) over it, which bounds the rounding.
    energy = args[2].double().nan_to_num(0.0, 0.0, 0.0).abs()
    start, stop = int(ref_args[0][0]), int(ref_args[0][-1])
    counts = (ref_args[0][1:] - ref_args[0][:-1]).cpu()
    event = torch.repeat_interleave(torch.arange(len(counts)), counts).to(energy.device)
    calibration = max(finite_max(options["calibration"]), 1.0) if "calibration" in options else 1.0
    divisor = torch.ones(len(counts), dtype=torch.float64, device=energy.device)
    if normalize == "sum":
        total = reference.hits_to_image(*ref_args, **{**options, "normalize": None}).double().sum(1)
        divisor = torch.where(total != 0, total, 1.0).abs()
    elif normalize == "incident":
        divisor = options["incident_energy"].double().abs()
    per_event = divisor.new_zeros(len(counts)).index_add_(0, event, energy[start:stop]) * calibration / divisor
    assert_agree(got, expected, rtol=rtol, atol=rtol * per_event.nan_to_num(0.0, 0.0, 0.0)[:, None], what=f"hits_to_image ({normalize})")
    if not (p["finite"] and p["ordinary"]) or got.numel() == 0:
        fuzz_examples["hits_to_image"]["value"] += 1
        return
    ours, theirs = args[2].detach().requires_grad_(), args[2].detach().requires_grad_()
    upstream = torch.randn(got.shape, generator=torch.Generator().manual_seed(p["seed"]), dtype=torch.float64).to(dtype=dtype, device=device)
    (grad,) = torch.autograd.grad(s2r.hits_to_image(args[0], args[1], ours, **options), ours, upstream)
    (want,) = torch.autograd.grad(reference.hits_to_image(ref_args[0], ref_args[1], theirs, **options), theirs, upstream)
    # A hit's gradient is (g_c - sum_k g_k out_k) / D for "sum": it cancels to 0 in a one-cell event,
    # so the rounding scales with the event's 2 max|g| calibration / D, not with the result.
    per_hit = torch.zeros_like(energy)
    per_hit[start:stop] = (2 * upstream.double().abs().amax(1) * calibration / divisor)[event]
    assert_agree(grad, want, rtol=rtol, atol=rtol * (per_hit + finite_max(want)), what="hits_to_image gradient")
    fuzz_examples["hits_to_image"]["value+grad"] += 1


# ---- shower_features ------------------------------------------------------------------------------


@st.composite
def shower_problems(draw):
    dtype = draw(FLOAT_DTYPES)
    sizes = draw(st.lists(st.integers(0, 3) | st.integers(4, 40), min_size=1, max_size=6))  # empty layers too
    layer_offsets = [0]
    for size in sizes:
        layer_offsets.append(layer_offsets[-1] + size)
    n_cells = layer_offsets[-1]
    n = draw(st.integers(0, 6) | st.integers(7, 30) | st.sampled_from((63, 64, 65, 129)))
    coord_scale = draw(st.sampled_from((1.0, 100.0, 1e4)))
    coords, _ = draw(values((n_cells, 2), dtype, coord_scale, specials=False))
    magnitude = draw(st.sampled_from(MAGNITUDES))
    scale = scale_of(magnitude, dtype, "moment")
    positive = draw(st.booleans())
    images, finite = draw(values((n, n_cells), dtype, scale, positive=positive, sparse=draw(st.booleans())))
    threshold = draw(st.sampled_from((0.0, 0.5, -0.5, math.inf, -math.inf, math.nan)))
    return {"images": images, "layer_offsets": layer_offsets, "coords": coords, "dtype": dtype,
            "threshold": threshold * scale if math.isfinite(threshold) else threshold,
            "layouts": (draw(st.sampled_from(LAYOUTS_2D)), draw(st.sampled_from(LAYOUTS_2D))),
            "gradients": finite and positive and magnitude in ("unit", "small", "large"), "seed": draw(SEEDS)}


def layer_sums(values: torch.Tensor, layer_offsets) -> torch.Tensor:
    """(N, n_cells) -> (N, L) sums over each layer's cells."""
    return torch.stack([values[:, a:b].sum(1) for a, b in zip(layer_offsets[:-1], layer_offsets[1:])], 1)


@pytest.mark.parametrize("device", DEVICES)
@given(p=shower_problems())
def test_shower_features_matches_reference(device, p, fuzz_examples):
    images = lay_out(p["images"].to(device), p["layouts"][0], math.nan)
    coords = lay_out(p["coords"].to(device), p["layouts"][1], math.nan)
    offsets, threshold, dtype = p["layer_offsets"], p["threshold"], p["dtype"]
    op = torch.ops.sim2real_fast.shower_features
    if offsets[-1] == 0:
        with pytest.raises(ValueError) as caught:
            op(images, offsets, coords, threshold)
        assert_clean_error(caught.value, "shower_features")
        fuzz_examples["shower_features"]["clean error"] += 1
        return
    layer_stats, event_stats, max_cell = op(images, offsets, coords, threshold)
    # The op accumulates in float64 (its documented contract): so does the oracle, the reference on
    # the inputs upcast exactly (threshold rounded to the dtype as the op does), its results rounded.
    exact = {"layer_offsets": offsets, "coords": coords.double(), "threshold": float(torch.tensor(threshold, dtype=dtype))}
    ref_layer, ref_event, ref_cell = reference.shower_features(images.double(), **exact)
    ref_layer, ref_event = ref_layer.to(dtype), ref_event.to(dtype)
    assert torch.equal(max_cell.cpu(), ref_cell.cpu()), (max_cell, ref_cell)
    rtol = tolerances(dtype)["rtol"]
    # Conditioning: sum |e| over |sum e| per layer and event. Centroids, widths and max_fraction are
    # compared where it is at most 10 or the sum is not finite (elsewhere they are 0/0-like: any
    # rounding moves them).
    absolute = images.double().nan_to_num(0.0, 0.0, 0.0).abs()
    abs_layer, abs_event = layer_sums(absolute, offsets), absolute.sum(1)
    cond_layer = torch.where(abs_layer > 0, abs_layer / ref_layer[..., 0].double().abs(), 1.0)
    cond_event = torch.where(abs_event > 0, abs_event / ref_event[:, 0].double().abs(), 1.0)
    reach = max(finite_max(coords), 1e-300)
    # The one-pass width in double rounds to about sqrt(eps cond) |x| where the width is ~0, eps the
    # relative precision of the energies in double (worse than 2^-52 for subnormal ones).
    positive = absolute[absolute > 0]
    eps = max(2.0**-52, 2.0**-1074 / positive.min().item()) if positive.numel() else 2.0**-52
    spread = (rtol * reach * cond_layer + 7 * (eps * cond_layer).sqrt() * reach).nan_to_num(0.0, 0.0, 0.0)
    atol = torch.stack([rtol * abs_layer, spread, spread, spread, spread, torch.full_like(abs_layer, rtol)], -1)
    well = (~(cond_layer > 10) | ~torch.isfinite(ref_layer[..., 0]))[..., None]
    columns = torch.tensor([True, False, False, False, False, True], device=well.device)
    assert_agree(layer_stats, ref_layer, rtol=rtol, atol=atol, mask=well | columns, what="shower_features layer_stats")
    event_well = torch.stack([torch.ones_like(cond_event, dtype=torch.bool), ~(cond_event > 10) | ~torch.isfinite(ref_event[:, 0])], -1)
    event_atol = torch.stack([rtol * abs_event, rtol * cond_event.nan_to_num(0.0, 0.0, 0.0)], -1)
    assert_agree(event_stats, ref_event, rtol=rtol * 10, atol=event_atol, mask=event_well, what="shower_features event_stats")
    if not p["gradients"] or images.numel() == 0:
        fuzz_examples["shower_features"]["value"] += 1
        return
    g = torch.Generator().manual_seed(p["seed"])
    w_layer = torch.randn(layer_stats.shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    w_event = torch.randn(event_stats.shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    # d width / d e_i ~ 1 / width: no weight on widths near 0, where rounding decides the gradient.
    w_layer[..., 3:5] *= ref_layer[..., 3:5] > 1e-2 * reach
    ours, theirs = images.detach().requires_grad_(), images.detach().double().requires_grad_()
    out, ref = op(ours, offsets, coords, threshold), reference.shower_features(theirs, **exact)
    (grad,) = torch.autograd.grad((out[0] * w_layer).sum() + (out[1] * w_event).sum(), ours)
    (want,) = torch.autograd.grad((ref[0] * w_layer.double()).sum() + (ref[1] * w_event.double()).sum(), theirs)
    want = want.to(dtype)
    # Rounding of the saved statistics (centroid c, width w, totals) is amplified by the terms
    # g_c (x - c) / E, g_w ((x - c)^2 - w^2) / (2 w E) and g_m / total: per layer and event, a bound.
    weights, stats = w_layer.double().abs(), ref_layer.double().abs()
    inverse = torch.where(stats[..., 0] > 0, 1.0 / stats[..., 0], 0.0)
    width = torch.where(stats[..., 3:5] > 0, stats[..., 3:5], 1.0)
    per_layer = (weights[..., 0] + (weights[..., 1] + weights[..., 2]) * reach * inverse
                 + (weights[..., 3:5] * reach * reach / width).sum(-1) * inverse)
    total = ref_event[:, 0].double().abs()
    per_event = w_event.double().abs()[:, 0] + w_event.double().abs()[:, 1] * torch.where(total > 0, 2.0 / total, 0.0)
    sizes = torch.tensor(offsets).diff().to(images.device)
    scale = per_layer.repeat_interleave(sizes, dim=1) + per_event[:, None]
    rtol = tolerances(dtype)["rtol"]
    assert_agree(grad, want, rtol=rtol, atol=rtol * scale, what="shower_features gradient")
    fuzz_examples["shower_features"]["value+grad"] += 1


# ---- grad_reverse ---------------------------------------------------------------------------------


@st.composite
def grad_reverse_problems(draw):
    dtype = draw(st.sampled_from((torch.float16, torch.bfloat16, torch.float32, torch.float64)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    x, _ = draw(values(shape, dtype, scale_of(draw(st.sampled_from(MAGNITUDES)), torch.float32, "sum")))
    upstream, _ = draw(values(shape, dtype, 1.0))
    alpha = draw(st.sampled_from((1.0, 0.0, -1.0, 0.3, 1e30, -1e-30, math.nan, math.inf, -math.inf)) | st.floats(-10, 10))
    return {"x": x, "upstream": upstream, "alpha": alpha, "layout": draw(st.sampled_from(("contiguous", "step", "offset", "transposed")))}


@pytest.mark.parametrize("device", DEVICES)
@given(p=grad_reverse_problems())
def test_grad_reverse_matches_reference(device, p, fuzz_examples):
    x = p["x"].to(device)
    if p["layout"] == "transposed":
        reverse = tuple(reversed(range(x.dim())))
        x = x.permute(reverse).contiguous().permute(reverse)
    elif x.dim():
        x = lay_out(x, p["layout"], math.nan)
    ours, theirs = x.detach().requires_grad_(), x.detach().requires_grad_()
    alpha = p["alpha"]
    if not math.isfinite(alpha):
        with pytest.raises(ValueError, match="alpha"):
            s2r.grad_reverse(ours, alpha)
        fuzz_examples["grad_reverse"]["clean error"] += 1
        return
    out, ref = s2r.grad_reverse(ours, alpha), reference.grad_reverse(theirs, alpha)
    assert out.data_ptr() == x.data_ptr() and out.shape == x.shape  # a view: no copy
    assert_agree(out, ref, rtol=0, atol=0, what="grad_reverse forward")
    upstream = p["upstream"].to(device)
    (grad,) = torch.autograd.grad(out, ours, upstream)
    (want,) = torch.autograd.grad(ref, theirs, upstream)
    assert_agree(grad, want, rtol=0, atol=0, what="grad_reverse gradient")
    fuzz_examples["grad_reverse"]["value+grad"] += 1
