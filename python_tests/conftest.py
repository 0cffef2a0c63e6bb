"""Fixtures: every device (CUDA skipped without a GPU) and both kernel dtypes; the hypothesis
profiles; the count of hypothesis examples run per op (test_fuzz_ops.py), printed at the end."""

import collections
import os

import pytest
from hypothesis import HealthCheck, settings

from helpers import DEVICES, DTYPES

# "ci", the default: the same bounded set of examples on every run. "fuzz" (HYPOTHESIS_PROFILE=fuzz,
# `make fuzz`): thousands of fresh random examples per test; a failure prints the blob that replays it.
settings.register_profile(
    "ci", derandomize=True, max_examples=150, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=3000, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow],
)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(HYPOTHESIS_PROFILE)

_FUZZ_EXAMPLES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param


@pytest.fixture(scope="session")
def fuzz_examples():
    """Per op, a Counter of the hypothesis examples run, by outcome (e.g. "compared", "clean error")."""
    return _FUZZ_EXAMPLES


def pytest_terminal_summary(terminalreporter):
    if not _FUZZ_EXAMPLES:
        return
    terminalreporter.section(f"hypothesis examples per op (profile {HYPOTHESIS_PROFILE!r})")
    for op, outcomes in sorted(_FUZZ_EXAMPLES.items()):
        detail = ", ".join(f"{outcome} {count}" for outcome, count in sorted(outcomes.items()))
        terminalreporter.write_line(f"{op}: {sum(outcomes.values())} examples ({detail})")
