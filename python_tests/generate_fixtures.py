"""Helpers shared by the generator tests (test_generate_*.py): CaloGAN showers and small models of each class, made
once per session and shared by the modules, the `data` and `fitted` fixtures on them, the one-line error check."""

import functools

import pytest
import torch

from sim2real_fast import simulate
from sim2real_fast.generate import FlowVAE, Generator, ShowerVAE

OPTIONS = {ShowerVAE: dict(latent=8, hidden=(64, 64)),
           FlowVAE: dict(latent=8, hidden=(64, 64), flow_hidden=(32, 32), flow_transforms=2)}


@functools.cache
def showers():
    """1,500 nominal CaloGAN showers of every particle, 1-100 GeV."""
    return simulate.showers(1500, effects="nominal", seed=0)


@functools.cache
def fitted_model(cls: type[Generator]) -> Generator:
    """A small ``cls`` fitted on :func:`showers` for 4 epochs over 1-100 GeV, one thread; fitted once per session,
    so the tests that use it must leave it as they found it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = cls("calogan", **OPTIONS[cls], kl_warmup=1.0, lr=3e-3)
        data = showers()
        return model.fit(data.images, data.labels, data.energy, energy_range=(1.0, 100.0), epochs=4, batch_size=64)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return showers()


def fitted_fixture(cls: type[Generator]):
    """A module-scoped fixture named ``fitted`` that gives :func:`fitted_model` of ``cls``."""
    return pytest.fixture(scope="module", name="fitted")(lambda: fitted_model(cls))


def fit_small(cls: type[Generator], data, n: int = 300, **kwargs) -> Generator:
    """A small ``cls`` fitted on the first ``n`` showers: 3 epochs over 1-100 GeV, seed 1, unless ``kwargs`` say."""
    options = dict(energy_range=(1.0, 100.0), epochs=3, batch_size=64, seed=1)
    model = cls("calogan", **OPTIONS[cls])
    return model.fit(data.images[:n], data.labels[:n], data.energy[:n], **{**options, **kwargs})


def one_line(error) -> str:
    """The text of a ``pytest.raises`` error, checked to be one line."""
    text = str(error.value)
    assert "\n" not in text, text
    return text
