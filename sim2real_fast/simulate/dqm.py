"""CMS HCAL DQM occupancy maps per lumi-section (LS), good and faulty, in a sim and a "real" domain.

Layout: the ``hcal`` geometry, 7 depths x 72 iphi rows x 84 ieta columns, flattened depth by depth
(row-major), as the per-depth (LS, 72, 84) arrays of the ML4DQM 2017 file (HCALDQM/ML4DQM).

Which cells exist (:func:`active_mask`) follows the 2017 HCAL readout as seen in run 306138:
- phi segmentation: ieta columns 0, 1, 82, 83 read every 4th iphi row (rows 2, 6, ...), columns
  2-21 and 62-81 every 2nd (even rows), the others all 72;
- columns read out per depth: depth 1 all; depth 2 0-24, 26-27, 56-57, 59-83; depth 3 0-12, 14-15,
  26, 57, 68-69, 71-83; depth 4 0-12, 27-56, 71-83; depths 5-7 none, except
- HEP17, the upgraded endcap sector (rows 62-65, columns 57-70) with its own depths: depth 1 57,
  60-70; depth 2 56-70; depth 3 58-70; depth 4 57, 59-69; depth 5 59-69; depth 6 60-69; depth 7 67-69.
This gives the file's zero fractions (27.6 / 63.1 / 80.5 / 49.7 / 99.5 / 99.6 / 99.9% for depths 1-7)
up to its handful of dead channels.

Occupancy of a cell in one LS = the number of the LS's events with a hit in it: Binomial(n_events, p),
drawn as its normal approximation, rounded, clipped to [0, n_events]. The per-event hit probability
p(depth, |ieta|) rises from the barrel to the endcap and is 1 in HF (its cells fire every event, so they
read n_events, as in the data).

A map is the detector's response (the domain) seen in a run (:class:`RunConditions`). The domains
differ as sim and data do:
- ``sim``: a smooth p;
- ``real``: an iphi modulation (+-6%, 2 periods) and a tilt in ieta of p, and 0.3% dead channels
  fixed per detector.
The run sets the events per LS and the pile-up, LS by LS (ls counts the run's LS from 0; an LS is
2^18 LHC orbits, 23.3 s):
- luminosity: L(ls) / L_peak = exp(-ls / lifetime_ls), times step_factor from LS step_ls on. A fill's
  luminosity decays; lifetimes of order 10-20 h (about 1500-3000 LS) are taken for 2017 LHC fills,
  a figure this package assumes, not one it measured;
- events: events_peak x L(ls) / L_peak x (1 + events_jitter x N(0, 1)), clipped to events_range,
  rounded (the recorded events follow the luminosity at a fixed trigger setup);
- pile-up: the mean number of interactions per crossing mu is proportional to L (mu = L sigma_inel /
  (n_bunches f_rev)). The domain's p is the occupancy at a reference mu_ref; at mu every cell reads
  p' = 1 - (1 - p)^(mu / mu_ref), i.e. its mean hits per event -log(1 - p) scale with mu. Treating the
  whole occupancy (noise, hard scatter and pile-up alike) as scaling with mu is this package's
  assumption: an upper bound on the pile-up dependence. The exponent mu / mu_ref is
  pileup_peak x L(ls) / L_peak, or pileup_peak in every LS (``pileup_follows_luminosity=False``).
Dividing a map by its LS's events removes the intensity but not the pile-up-driven occupancy change,
as in real data. Each domain has default conditions (:data:`DOMAIN_CONDITIONS`): ``sim`` a flat run
of 1600 +- 2% events per LS at mu_ref; ``real`` 1400 events per LS at LS 0 decaying with a 2000 LS
lifetime, one step up by x1.45 at a random LS, clipped to [1000, 2100] (n_events 1350-2050, as in run
306138), and a fixed pile-up exponent 1.3. :data:`RUNS` are two example runs for run classification.

Faults, one per faulty map (labels: :data:`FAULTS`), as ML4DQM's synthetic ones: a dead readout box
(RBX: 4 iphi rows x one half of the barrel or endcap, all depths, read 0), a dead region (a rectangle
of 3-10 x 3-10 cells of one depth, around a random active cell, reads 0), hot channels (1-5 active
barrel / endcap cells read n_events), a noisy region (a rectangle with
p -> p + (1 - p)/2), a degraded gain (an RBX reads with p x 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from .. import geometry as _geometry

__all__ = [
    "DOMAIN_CONDITIONS", "DQMMaps", "FAULTS", "RUNS", "RunConditions", "active_mask", "dqm_maps", "hit_probability",
]

#: Fault name -> label; 0 is a good map.
FAULTS = {"good": 0, "dead_rbx": 1, "dead_region": 2, "hot_channels": 3, "noisy_region": 4, "degraded_gain": 5}

N_DEPTHS, N_IPHI, N_IETA = 7, 72, 84

_COLUMNS = {
    1: [(0, 83)],
    2: [(0, 24), (26, 27), (56, 57), (59, 83)],
    3: [(0, 12), (14, 15), (26, 26), (57, 57), (68, 69), (71, 83)],
    4: [(0, 12), (27, 56), (71, 83)],
    5: [], 6: [], 7: [],
}
_HEP17_ROWS, _HEP17_COLUMNS = (62, 66), (57, 71)
_HEP17 = {
    1: [(57, 57), (60, 70)],
    2: [(56, 70)],
    3: [(58, 70)],
    4: [(57, 57), (59, 69)],
    5: [(59, 69)],
    6: [(60, 69)],
    7: [(67, 69)],
}
# the per-event hit probability in the barrel (column distance from the centre < 14.5) per depth
_BARREL_P = torch.tensor([0.35, 0.10, 0.30, 0.25, 0.30, 0.30, 0.30])


class DQMMaps(NamedTuple):
    """The output of :func:`dqm_maps`."""

    maps: torch.Tensor  # (LS, 42336) float32 occupancy (hits per LS), hcal flat order
    labels: torch.Tensor  # (LS,) int64 fault label (FAULTS), 0 = good
    fault_mask: torch.Tensor  # (LS, 42336) bool, the cells the fault touched
    events: torch.Tensor  # (LS,) float32 events in the LS
    geometry: _geometry.Geometry
    luminosity: torch.Tensor  # (LS,) float32 L(ls) / L_peak, the expected events are events_peak x this
    pileup: torch.Tensor  # (LS,) float32 the hit-probability exponent mu(ls) / mu_ref


@dataclass(frozen=True)
class RunConditions:
    """One run's luminosity curve, recorded events and pile-up (see the module docstring).

    Attributes:
        events_peak: mean events per LS at L_peak (the run's LS 0, before a step).
        lifetime_ls: the luminosity lifetime in LS (23.3 s each); ``math.inf``: a flat luminosity.
        step_ls: the run's LS from which the luminosity is ``step_factor`` times higher; None: no
            step; ``"random"``: an LS drawn uniformly from first_ls .. first_ls + n_lumisections by
            each call (give an int to simulate one run in pieces).
        step_factor: the luminosity after the step over that before it.
        events_jitter: the relative per-LS std of the events around their expectation.
        events_range: (low, high) events per LS the draws are clipped to.
        pileup_peak: mu / mu_ref at L_peak, the exponent of the hit probability; 1 is the domain's p.
        pileup_follows_luminosity: True: the exponent is pileup_peak x L(ls) / L_peak; False:
            pileup_peak in every LS.
    """

    events_peak: float = 1600.0
    lifetime_ls: float = math.inf
    step_ls: int | str | None = None
    step_factor: float = 1.0
    events_jitter: float = 0.02
    events_range: tuple[float, float] = (0.0, math.inf)
    pileup_peak: float = 1.0
    pileup_follows_luminosity: bool = True

    def __post_init__(self):
        positive = {"events_peak": self.events_peak, "step_factor": self.step_factor, "pileup_peak": self.pileup_peak}
        for name, value in positive.items():
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        if not (isinstance(self.lifetime_ls, (int, float)) and self.lifetime_ls > 0):
            raise ValueError(f"lifetime_ls: expected a number of LS > 0 (math.inf: flat), got {self.lifetime_ls!r}")
        step = self.step_ls
        index = isinstance(step, int) and not isinstance(step, bool) and step >= 0
        if not (step is None or step == "random" or index):
            raise ValueError(f"step_ls: expected None, 'random' or an LS index >= 0, got {step!r}")
        if not (isinstance(self.events_jitter, (int, float)) and 0 <= self.events_jitter < math.inf):
            raise ValueError(f"events_jitter: expected a finite relative std >= 0, got {self.events_jitter!r}")
        low_high = self.events_range
        if not (isinstance(low_high, tuple) and len(low_high) == 2 and 0 <= low_high[0] <= low_high[1]):
            raise ValueError(f"events_range: expected (low, high) with 0 <= low <= high, got {low_high!r}")
        if not isinstance(self.pileup_follows_luminosity, bool):
            raise ValueError(f"pileup_follows_luminosity: expected a bool, got {self.pileup_follows_luminosity!r}")


#: Each domain's run when :func:`dqm_maps` is given no conditions.
DOMAIN_CONDITIONS = {
    "sim": RunConditions(),
    "real": RunConditions(
        events_peak=1400.0, lifetime_ls=2000.0, step_ls="random", step_factor=1.45, events_range=(1000.0, 2100.0),
        pileup_peak=1.3, pileup_follows_luminosity=False,
    ),
}

#: Two example runs for run classification, the same fill shape (a 2500 LS, about 16 h, lifetime):
#: A records 1.5x the events of B and sees 5% more pile-up (the recorded events also depend on the
#: trigger setup, so runs can differ more in events than in mu). Raw counts separate them trivially;
#: maps divided by their events only through A's slightly higher occupancy, and not at all between LS
#: of equal mu (A's pile-up decays to B's peak value after about 120 LS).
RUNS = {
    "A": RunConditions(events_peak=2100.0, lifetime_ls=2500.0, pileup_peak=1.05),
    "B": RunConditions(events_peak=1400.0, lifetime_ls=2500.0, pileup_peak=1.0),
}


def _columns(ranges: list[tuple[int, int]]) -> torch.Tensor:
    on = torch.zeros(N_IETA, dtype=torch.bool)
    for first, last in ranges:
        on[first : last + 1] = True
    return on


def active_mask() -> torch.Tensor:
    """(7, 72, 84) bool: the cells the 2017 HCAL reads out (see the module docstring)."""
    col = torch.arange(N_IETA)
    row = torch.arange(N_IPHI)[:, None]
    step = torch.where((col <= 1) | (col >= 82), 4, torch.where((col <= 21) | (col >= 62), 2, 1))
    phase = torch.where(step == 4, 2, 0)
    segment = (row % step) == phase  # (72, 84)
    mask = torch.zeros(N_DEPTHS, N_IPHI, N_IETA, dtype=torch.bool)
    hep_rows = slice(*_HEP17_ROWS)
    hep_cols = slice(*_HEP17_COLUMNS)
    for depth in range(1, N_DEPTHS + 1):
        mask[depth - 1] = _columns(_COLUMNS[depth])[None, :] & segment
        hep = _columns(_HEP17[depth])[None, :] & segment
        mask[depth - 1, hep_rows, hep_cols] = hep[hep_rows, hep_cols]
    return mask


def hit_probability(domain: str = "sim", pileup: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Per-event hit probability of every cell (0 where no cell is), 1 - (1 - p_domain)^pileup.

    Args:
        domain: ``"sim"`` or ``"real"``, the detector response p_domain (see the module docstring).
        pileup: the exponent mu / mu_ref: a float gives (7, 72, 84), an (LS,) tensor (LS, 7, 72, 84).
    """
    if domain not in ("sim", "real"):
        raise ValueError(f"domain: expected 'sim' or 'real', got {domain!r}")
    distance = (torch.arange(N_IETA) - (N_IETA - 1) / 2).abs()  # 0.5 ... 41.5 columns from the centre
    endcap = ((distance - 14.5) / 15).clamp(0, 1) ** 1.5
    p = (_BARREL_P[:, None] + (1 - _BARREL_P[:, None]) * endcap[None, :])[:, None, :].expand(-1, N_IPHI, -1)
    if domain == "real":
        phi = torch.arange(N_IPHI) * (2 * torch.pi / N_IPHI)
        modulation = 1 + 0.06 * torch.sin(2 * phi)[:, None] + 0.08 * (torch.arange(N_IETA) / (N_IETA - 1) - 0.5)
        p = (p * modulation).clamp(0, 1)
    if isinstance(pileup, torch.Tensor):
        k = pileup.view(-1, 1, 1, 1)
        p = torch.where(k == 1, p, 1 - (1 - p) ** k)
    elif pileup != 1:
        p = 1 - (1 - p) ** pileup
    return torch.where(distance >= 29.5, 1.0, p) * active_mask()  # HF: every event


def _rectangle(n: int, active: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(depth, row0, col0, height, width) of n rectangles, 3-10 cells a side, around random active cells."""
    centre = torch.multinomial(active.flatten().float(), n, replacement=True, generator=g)
    depth, row, col = centre // (N_IPHI * N_IETA), centre // N_IETA % N_IPHI, centre % N_IETA
    height = torch.randint(3, 11, (n,), generator=g)
    width = torch.randint(3, 11, (n,), generator=g)
    col0 = torch.minimum((col - width // 2).clamp_min(0), N_IETA - width)
    return depth, (row - height // 2) % N_IPHI, col0, height, width


def _rectangle_mask(depth, row0, col0, height, width, all_depths: bool = False) -> torch.Tensor:
    """(n, 7, 72, 84) bool of the rectangles; rows wrap around in iphi."""
    d = torch.arange(N_DEPTHS)[None, :, None, None]
    r = torch.arange(N_IPHI)[None, None, :, None]
    c = torch.arange(N_IETA)[None, None, None, :]
    view = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    in_rows = ((r - view(row0)) % N_IPHI) < view(height)
    in_cols = (c >= view(col0)) & (c < view(col0 + width))
    in_depth = True if all_depths else d == view(depth)
    return in_rows & in_cols & in_depth


def _rbx(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Readout boxes: 4 iphi rows x one half (ieta side) of the barrel or of an endcap, all depths."""
    row0 = torch.randint(N_IPHI // 4, (n,), generator=g) * 4
    part = torch.randint(4, (n,), generator=g)  # HE-, HB-, HB+, HE+
    col0 = torch.tensor([13, 27, 42, 57])[part]
    width = torch.tensor([14, 15, 15, 14])[part]
    return torch.zeros(n, dtype=torch.long), row0, col0, torch.full((n,), 4), width


def dqm_maps(
    n_lumisections: int,
    *,
    domain: str = "sim",
    faults: Sequence[str] | None = ("dead_rbx", "dead_region", "hot_channels", "noisy_region", "degraded_gain"),
    fault_fraction: float = 0.5,
    seed: int = 0,
    detector_seed: int = 0,
    conditions: RunConditions | None = None,
    first_ls: int = 0,
) -> DQMMaps:
    """HCAL occupancy maps, (LS, 42336), with a fault in about ``fault_fraction`` of them.

    Args:
        domain: ``"sim"`` or ``"real"``, the detector response (see the module docstring).
        faults: the fault types to inject (names from :data:`FAULTS`), each faulty map picks one
            uniformly; None or () gives only good maps.
        seed: the same seed gives the same maps; detector_seed fixes the real domain's dead channels.
        conditions: the run; None: the domain's :data:`DOMAIN_CONDITIONS`.
        first_ls: the run's LS of the first map: calls for LS 0 .. n - 1 and n .. 2n - 1 follow the
            same luminosity curve as one call for 0 .. 2n - 1 (with their own random draws).
    """
    if domain not in ("sim", "real"):
        raise ValueError(f"domain: expected 'sim' or 'real', got {domain!r}")
    kinds = list(faults or ())
    unknown = [f for f in kinds if f not in FAULTS or f == "good"]
    if unknown:
        raise ValueError(f"faults: unknown {unknown}; expected names from {[f for f in FAULTS if f != 'good']}")
    if not 0 <= fault_fraction <= 1:
        raise ValueError(f"fault_fraction: expected a probability in [0, 1], got {fault_fraction}")
    if conditions is not None and not isinstance(conditions, RunConditions):
        raise ValueError(f"conditions: expected a RunConditions or None, got {type(conditions).__name__}")
    if isinstance(first_ls, bool) or not isinstance(first_ls, int) or first_ls < 0:
        raise ValueError(f"first_ls: expected an LS index >= 0, got {first_ls!r}")
    run = DOMAIN_CONDITIONS[domain] if conditions is None else conditions
    n = n_lumisections
    g = torch.Generator().manual_seed(seed)
    geometry = _geometry.get("hcal")
    ls = torch.arange(first_ls, first_ls + n, dtype=torch.float32)
    step = first_ls + int(torch.randint(n + 1, (1,), generator=g)) if run.step_ls == "random" else run.step_ls
    level = torch.ones(n) if step is None else torch.where(ls >= step, run.step_factor, 1.0)
    decay = torch.exp(-ls / run.lifetime_ls)
    jitter = 1 + run.events_jitter * torch.randn(n, generator=g)
    events = (run.events_peak * level * decay * jitter).clamp(*run.events_range).round()
    luminosity = level * decay
    pileup = run.pileup_peak * luminosity if run.pileup_follows_luminosity else run.pileup_peak
    p = hit_probability(domain, pileup).expand(n, -1, -1, -1).clone()

    labels = torch.zeros(n, dtype=torch.long)
    touched = torch.zeros(n, N_DEPTHS, N_IPHI, N_IETA, dtype=torch.bool)
    zero = torch.zeros_like(touched)
    if kinds:
        faulty = torch.rand(n, generator=g) < fault_fraction
        pick = torch.randint(len(kinds), (n,), generator=g)
        labels = torch.where(faulty, torch.tensor([FAULTS[k] for k in kinds])[pick], 0)
        active = p > 0
        rbx = _rectangle_mask(*_rbx(n, g), all_depths=True) & active
        region = _rectangle_mask(*_rectangle(n, active[0], g)) & active
        candidate = active & (p < 0.95)  # HF cells read n_events anyway
        score = torch.rand(n, N_DEPTHS * N_IPHI * N_IETA, generator=g) * candidate.flatten(1)
        n_hot = torch.randint(1, 6, (n,), generator=g)
        hot = score >= score.topk(5, 1).values.gather(1, (n_hot - 1)[:, None])
        hot = hot.view_as(touched) & candidate
        view = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
        for name, cells in (("dead_rbx", rbx), ("dead_region", region), ("hot_channels", hot),
                            ("noisy_region", region), ("degraded_gain", rbx)):
            touched |= cells & view(labels == FAULTS[name])
        noisy = touched & view(labels == FAULTS["noisy_region"])
        p = torch.where(noisy, p + (1 - p) / 2, p)
        p = torch.where(touched & view(labels == FAULTS["degraded_gain"]), p * 0.5, p)
        zero = touched & view((labels == FAULTS["dead_rbx"]) | (labels == FAULTS["dead_region"]))

    mean = events.view(-1, 1, 1, 1) * p
    occupancy = (mean + torch.sqrt(mean * (1 - p)) * torch.randn(p.shape, generator=g)).round()
    occupancy = torch.minimum(occupancy.clamp_min(0), events.view(-1, 1, 1, 1)) * (p > 0)
    if kinds:
        hot_cells = touched & (labels == FAULTS["hot_channels"]).view(-1, 1, 1, 1)
        occupancy = torch.where(hot_cells, events.view(-1, 1, 1, 1), occupancy)
    occupancy = occupancy * ~zero
    if domain == "real":
        dead = torch.rand(N_DEPTHS, N_IPHI, N_IETA, generator=torch.Generator().manual_seed(detector_seed)) < 0.003
        occupancy = occupancy * ~dead
    pileup = pileup if isinstance(pileup, torch.Tensor) else torch.full((n,), pileup)
    return DQMMaps(
        occupancy.flatten(1).float(), labels, touched.flatten(1), events.float(), geometry, luminosity, pileup
    )
