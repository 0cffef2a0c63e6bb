"""The README's usage lines run as written and give losses a user can train on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import sim2real_fast as s2r

README = Path(__file__).resolve().parents[1] / "README.md"


def _usage_lines(prefix: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Usage\n\n```python\n(.*?)```", text, re.S)
    assert block, "README.md has no python block under '## Usage'"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("line", _usage_lines("loss = s2r.mmd("))
def test_mmd_examples_separate_shifted_features_from_a_same_distribution_floor(line):
    """Each ``s2r.mmd`` call of the example reads a 0.1 mean shift in 256 features as clearly above the
    value between two samples of one distribution (a bandwidth far off the data's scale gives ~0 for both)."""
    torch.manual_seed(0)
    setup = {"torch": torch, "s2r": s2r, "source": torch.randn(4096, 256, requires_grad=True)}
    shifted = dict(setup, target=torch.randn(3000, 256) + 0.1)
    same = dict(setup, target=torch.randn(3000, 256))
    exec(line, shifted)
    exec(line, same)
    loss, floor = shifted["loss"], same["loss"]
    assert loss.item() > 1e-3, f"{line}: MMD^2 of a 0.1 shift is {loss.item():.3g}"
    assert loss.item() > 3 * abs(floor.item()), f"{line}: {loss.item():.3g} vs floor {floor.item():.3g}"
    loss.backward()
    assert setup["source"].grad.abs().max() > 1e-9
