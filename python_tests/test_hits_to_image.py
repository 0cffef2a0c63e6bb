"""sim2real_fast.hits_to_image: values and gradients against the reference, edge cases, bad input, fuzzing."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim2real_fast as s2r
from sim2real_fast import reference

from helpers import tolerances

NORMALIZE = [None, "log1p", "sum", "incident"]


def _problem(n_events, n_cells, dtype, device, *, mean_hits=20.0, lead=0, seed=0, cell_dtype=torch.int64):
    """Jagged hits; the first `lead` hits belong to no event (offsets[0] = lead)."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.full((n_events,), mean_hits), generator=g).long()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]) + lead
    n_hits = int(offsets[-1]) + 3  # and a few trailing hits outside every event
    cell = torch.randint(0, max(n_cells, 1), (n_hits,), generator=g).to(cell_dtype)
    energy = torch.empty(n_hits, dtype=torch.float64).exponential_(0.1, generator=g)
    incident = 1.0 + 100 * torch.rand(n_events, generator=g, dtype=torch.float64)
    return (offsets.to(device), cell.to(device), energy.to(dtype=dtype, device=device),
            incident.to(dtype=dtype, device=device))


def _options(n_cells, dtype, device, normalize, incident, *, calibrate, seed=1):
    g = torch.Generator().manual_seed(seed)
    options = {"n_cells": n_cells, "normalize": normalize}
    if calibrate:
        options["calibration"] = (0.9 + 0.2 * torch.rand(n_cells, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)
        options["dead"] = (torch.rand(n_cells, generator=g) < 0.1).to(device)
        options["threshold"] = 5.0
    if normalize == "incident":
        options["incident_energy"] = incident
    return options


def test_duplicates_add_and_order_of_operations():
    offsets = torch.tensor([0, 3, 3, 6])
    cell = torch.tensor([1, 1, 2, 0, 3, 0], dtype=torch.int32)
    energy = torch.tensor([1.0, 2.0, 0.5, 4.0, 9.0, 6.0])
    image = s2r.hits_to_image(offsets, cell, energy, n_cells=4)
    torch.testing.assert_close(image, torch.tensor([[0, 3.0, 0.5, 0], [0, 0, 0, 0], [10.0, 0, 0, 9.0]]))
    calibrated = s2r.hits_to_image(
        offsets, cell, energy, n_cells=4, calibration=torch.tensor([1.0, 2.0, 2.0, 1.0]),
        dead=torch.tensor([False, False, False, True]), threshold=1.5, normalize="sum",
    )
    # event 0: cell 1 = 3 * 2 = 6, cell 2 = 0.5 * 2 = 1 < 1.5 suppressed; event 2: cell 3 dead.
    torch.testing.assert_close(calibrated, torch.tensor([[0, 1.0, 0, 0], [0, 0, 0, 0], [1.0, 0, 0, 0]]))
    logged = s2r.hits_to_image(offsets, cell, energy, n_cells=4, normalize="log1p")
    torch.testing.assert_close(logged, torch.log1p(image))
    per_incident = s2r.hits_to_image(offsets, cell, energy, n_cells=4, normalize="incident",
                                     incident_energy=torch.tensor([2.0, 1.0, 4.0]))
    torch.testing.assert_close(per_incident, image / torch.tensor([[2.0], [1.0], [4.0]]))


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("calibrate", [False, True], ids=["plain", "calibrated"])
@pytest.mark.parametrize("cell_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_values_and_gradients_match_reference(device, dtype, normalize, calibrate, cell_dtype):
    offsets, cell, energy, incident = _problem(300, 504, dtype, device, lead=4, cell_dtype=cell_dtype)
    options = _options(504, dtype, device, normalize, incident, calibrate=calibrate)
    ours_in, ref_in = energy.clone().requires_grad_(), energy.clone().requires_grad_()
    ours = s2r.hits_to_image(offsets, cell, ours_in, **options)
    ref = reference.hits_to_image(offsets, cell, ref_in, **options)
    assert ours.shape == (300, 504) and ours.dtype == dtype and ours.device == energy.device
    torch.testing.assert_close(ours, ref, **tolerances(dtype))
    weight = torch.randn(ours.shape, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
    (got,) = torch.autograd.grad((ours * weight).sum(), ours_in)
    (expected,) = torch.autograd.grad((ref * weight).sum(), ref_in)
    torch.testing.assert_close(got, expected, **tolerances(dtype))
    assert got[:4].abs().sum() == 0 and got[-3:].abs().sum() == 0  # hits outside every event


def test_large_geometry_uses_the_global_accumulator(device):
    """40500 cells (CaloChallenge ds3) do not fit one block's shared memory on CUDA."""
    offsets, cell, energy, _ = _problem(40, 40500, torch.float32, device, mean_hits=500.0)
    energy.requires_grad_()
    ours = s2r.hits_to_image(offsets, cell, energy, n_cells=40500, normalize="sum")
    ref = reference.hits_to_image(offsets, cell, energy, n_cells=40500, normalize="sum")
    torch.testing.assert_close(ours, ref, **tolerances(torch.float32))
    weight = torch.randn(ours.shape, generator=torch.Generator().manual_seed(3)).to(device)
    got, expected = (torch.autograd.grad((out * weight).sum(), energy)[0] for out in (ours, ref))
    torch.testing.assert_close(got, expected, rtol=2e-4, atol=1e-8)


def test_non_contiguous_inputs(device, dtype):
    offsets, cell, energy, _ = _problem(50, 100, dtype, device)
    n = cell.shape[0]
    cell2 = torch.stack([cell, torch.full_like(cell, -1)], 1).reshape(-1)[::2]
    energy2 = torch.stack([energy, torch.full_like(energy, 7.0)], 1).reshape(-1)[::2]
    offsets2 = torch.stack([offsets, offsets], 1).reshape(-1)[::2]
    assert not energy2.is_contiguous() and not cell2.is_contiguous() and not offsets2.is_contiguous()
    assert cell2.shape[0] == n
    torch.testing.assert_close(s2r.hits_to_image(offsets2, cell2, energy2, n_cells=100),
                               reference.hits_to_image(offsets, cell, energy, n_cells=100), **tolerances(dtype))


def test_empty_inputs(device, dtype):
    zero_events = s2r.hits_to_image(torch.zeros(1, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.long, device=device),
                                    torch.zeros(0, dtype=dtype, device=device), n_cells=504)
    assert zero_events.shape == (0, 504)
    no_hits = s2r.hits_to_image(torch.zeros(4, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.int32, device=device),
                                torch.zeros(0, dtype=dtype, device=device), n_cells=7, normalize="sum")
    assert torch.equal(no_hits, torch.zeros(3, 7, dtype=dtype, device=device))
    no_cells = s2r.hits_to_image(torch.zeros(3, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.long, device=device),
                                 torch.zeros(0, dtype=dtype, device=device), n_cells=0)
    assert no_cells.shape == (2, 0)
    with pytest.raises(IndexError, match=r"event 0: cell index 0 of hit 0 is out of range \[0, 0\)"):
        s2r.hits_to_image(torch.tensor([0, 1], device=device), torch.tensor([0], device=device),
                          torch.ones(1, dtype=dtype, device=device), n_cells=0)
    single = s2r.hits_to_image(torch.tensor([0, 1], device=device), torch.tensor([3], device=device),
                               torch.tensor([2.5], dtype=dtype, device=device), n_cells=5, normalize="sum")
    assert torch.equal(single, torch.tensor([[0, 0, 0, 1.0, 0]], dtype=dtype, device=device))


def test_nan_is_kept_and_negative_sums_are_suppressed(device):
    offsets = torch.tensor([0, 3], device=device)
    cell = torch.tensor([0, 1, 1], device=device)
    image = s2r.hits_to_image(offsets, cell, torch.tensor([float("nan"), -2.0, 1.0], device=device), n_cells=3)
    assert torch.isnan(image[0, 0]) and image[0, 1] == 0 and image[0, 2] == 0
    kept = s2r.hits_to_image(offsets, cell, torch.tensor([1.0, -2.0, 1.0], device=device), n_cells=3, threshold=-10.0)
    assert kept[0, 1] == -1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sum_of_a_subnormal_total_divides_without_overflow(device, dtype):
    """1 / total overflows to inf for a subnormal total; the images and gradients divide by it instead."""
    total = torch.finfo(dtype).tiny / 8  # subnormal, 1 / total > finfo.max; the hits hold 1/4 and 3/4 of it
    offsets, cell = torch.tensor([0, 2], device=device), torch.tensor([0, 2], device=device)
    energy = torch.tensor([total / 4, 3 * total / 4], dtype=dtype, device=device, requires_grad=True)
    image = s2r.hits_to_image(offsets, cell, energy, n_cells=3, normalize="sum")
    assert torch.equal(image, torch.tensor([[0.25, 0.0, 0.75]], dtype=dtype, device=device))
    weight = torch.tensor([1.0, 0.0, 1.1], dtype=dtype, device=device)
    grad, = torch.autograd.grad((image * weight).sum(), energy)
    g = weight.double()[[0, 2]]
    expected = ((g - (0.25 * g[0] + 0.75 * g[1])) / total).to(dtype)  # (g_c - sum_k g_k out_k) / total
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "offsets, cell, error, match",
    [
        ([0, 2, 4], [0, 1, 2, 9], IndexError, r"event 1: cell index 9 of hit 3 is out of range \[0, 4\)"),
        ([0, 2, 4], [0, -1, 2, 1], IndexError, r"event 0: cell index -1 of hit 1"),
        ([0, 3, 2, 4], [0, 1, 2, 3], ValueError, r"event 1: offsets\[1\] = 3, offsets\[2\] = 2"),
        ([0, 2, 5], [0, 1, 2, 3], ValueError, r"event 1: .*within \[0, 4\]"),
        ([-1, 2, 4], [0, 1, 2, 3], ValueError, r"event 0: offsets\[0\] = -1"),
        ([0, 2, 1, 4], [0, 7, 2, 3], IndexError, r"event 0: cell index 7"),  # the first bad event wins
        ([0, 2, 1, 4], [0, 1, 2, 7], ValueError, r"event 1: offsets"),
    ],
)
def test_bad_values_name_the_first_bad_event(device, offsets, cell, error, match):
    args = (torch.tensor(offsets, device=device), torch.tensor(cell, device=device), torch.ones(4, device=device))
    for implementation in (s2r.hits_to_image, reference.hits_to_image):
        with pytest.raises(error, match=match):
            implementation(*args, n_cells=4)


def test_bad_arguments_say_what_was_expected():
    offsets, cell, energy = torch.tensor([0, 2]), torch.tensor([0, 1]), torch.ones(2)
    cases = [
        (dict(cell=cell.float()), TypeError, "cell must be int32 or int64"),
        (dict(energy=torch.ones(2, dtype=torch.long)), TypeError, "energy must be a floating-point"),
        (dict(energy=torch.ones(3)), ValueError, "one entry per hit"),
        (dict(offsets=offsets.view(1, 2)), ValueError, "offsets must be 1-D"),
        (dict(n_cells=-1), ValueError, "n_cells must be a non-negative int"),
        (dict(normalize="max"), ValueError, "normalize must be one of"),
        (dict(normalize="incident"), ValueError, "incident_energy must be given"),
        (dict(calibration=torch.ones(3)), ValueError, "calibration must have n_cells = 4"),
        (dict(incident_energy=torch.ones(2), normalize="incident"), ValueError, r"incident_energy must be \(N,\) = \(1,\)"),
    ]
    for change, error, match in cases:
        args = {"offsets": offsets, "cell": cell, "energy": energy, "n_cells": 4, **change}
        with pytest.raises(error, match=match):
            s2r.hits_to_image(args.pop("offsets"), args.pop("cell"), args.pop("energy"), **args)
    with pytest.raises(ValueError, match="not differentiable w.r.t. calibration"):
        s2r.hits_to_image(offsets, cell, energy, n_cells=4, calibration=torch.ones(4, requires_grad=True))


def test_numpy_int32_offsets_and_half_energy():
    offsets = np.array([0, 1, 3], dtype=np.int32)
    image = s2r.hits_to_image(offsets, np.array([2, 0, 2]), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16), n_cells=3)
    assert image.dtype == torch.float32
    torch.testing.assert_close(image, torch.tensor([[0, 0, 1.0], [2.0, 0, 3.0]]))


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_gradcheck_float64(device, normalize):
    offsets, cell, energy, incident = _problem(6, 9, torch.float64, device, mean_hits=4.0, lead=1)
    options = _options(9, torch.float64, device, normalize, incident, calibrate=True)
    options["threshold"] = 0.0  # gradcheck's finite differences must not cross the threshold

    def f(e):
        return s2r.hits_to_image(offsets, cell, e, **options)

    assert torch.autograd.gradcheck(f, (energy.clone().requires_grad_(),))


@pytest.mark.parametrize("normalize", ["none", "sum", "incident"])
def test_opcheck(device, normalize):
    offsets, cell, energy, incident = _problem(8, 12, torch.float32, device, mean_hits=5.0)
    calibration = torch.rand(12, device=device) + 0.5
    dead = torch.zeros(12, dtype=torch.bool, device=device)
    inc = incident if normalize == "incident" else None
    args = (offsets, cell, energy.requires_grad_(), 12, calibration, dead, 0.0, normalize, inc)
    torch.library.opcheck(torch.ops.sim2real_fast.hits_to_image.default, args)
    grad = torch.randn(8, 12, device=device)
    torch.library.opcheck(torch.ops.sim2real_fast._hits_to_image_backward.default, (grad, *args[:2], energy.detach(), *args[3:]))


def test_torch_compile_fullgraph():
    offsets, cell, energy, _ = _problem(10, 20, torch.float32, "cpu")
    compiled = torch.compile(lambda o, c, e: s2r.hits_to_image(o, c, e, n_cells=20, normalize="log1p"), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(offsets, cell, energy), reference.hits_to_image(offsets, cell, energy, n_cells=20, normalize="log1p"))


@st.composite
def jagged(draw):
    n_cells = draw(st.integers(1, 40))
    counts = draw(st.lists(st.integers(0, 6), min_size=0, max_size=12))
    lead = draw(st.integers(0, 2))
    n_hits = lead + sum(counts) + draw(st.integers(0, 2))
    cells = draw(st.lists(st.integers(0, n_cells - 1), min_size=n_hits, max_size=n_hits))
    energies = draw(st.lists(st.floats(-1.0, 100.0, width=32), min_size=n_hits, max_size=n_hits))
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]) + lead
    corrupt = draw(st.sampled_from(["none", "cell", "offsets"]))
    if corrupt == "cell" and n_hits:
        cells[draw(st.integers(0, n_hits - 1))] = draw(st.sampled_from([-3, n_cells, n_cells + 100]))
    if corrupt == "offsets":
        i = draw(st.integers(0, len(offsets) - 1))
        offsets[i] += draw(st.sampled_from([-5, 7, n_hits + 1]))
    normalize = draw(st.sampled_from(NORMALIZE))
    threshold = draw(st.sampled_from([0.0, 10.0, -1e9]))
    return offsets, np.array(cells, dtype=np.int64), np.array(energies, dtype=np.float32), n_cells, normalize, threshold


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jagged())
def test_fuzz_against_reference(problem):
    offsets, cells, energies, n_cells, normalize, threshold = problem
    n_events = len(offsets) - 1
    incident = torch.linspace(1.0, 2.0, n_events) if normalize == "incident" else None
    options = dict(n_cells=n_cells, normalize=normalize, threshold=threshold, incident_energy=incident)
    args = (torch.from_numpy(offsets), torch.from_numpy(cells), torch.from_numpy(energies))
    try:
        expected = reference.hits_to_image(*args, **options)
    except (IndexError, ValueError) as error:
        with pytest.raises(type(error)) as caught:
            s2r.hits_to_image(*args, **options)
        assert str(caught.value).splitlines()[0] == str(error)
        return
    torch.testing.assert_close(s2r.hits_to_image(*args, **options), expected, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_log1p_accuracy_over_the_float_range(device):
    """The fused float32 log1p is within 1.5 ulp of the correctly rounded value, special values included."""
    x = torch.cat([torch.logspace(-30, 38, 20000), -torch.logspace(-30, 0, 10000)[:-1],
                   torch.tensor([0.0, -1.0, -2.0, float("inf"), float("nan")])]).to(device)
    image = s2r.hits_to_image(torch.arange(x.numel() + 1, device=device), torch.zeros_like(x, dtype=torch.long), x,
                              n_cells=1, normalize="log1p", threshold=-1e30)[:, 0]
    exact = torch.log1p(x.double())
    rounded = exact.float()
    finite = torch.isfinite(rounded)
    ulp = (torch.nextafter(rounded.abs(), torch.tensor(float("inf"), device=device)) - rounded.abs()).double()
    assert ((image.double() - exact).abs()[finite] / ulp[finite]).max() <= 1.5
    torch.testing.assert_close(image[~finite], rounded[~finite], equal_nan=True)
