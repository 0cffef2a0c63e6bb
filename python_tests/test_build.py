"""The compiled library: loaded, its ops registered, built the way CI asked for."""

import os
import subprocess
import sys

import pytest
import torch

import sim2real_fast


def test_extension_is_loaded():
    info = sim2real_fast.build_info()
    assert info["extension"] is True, info
    assert sim2real_fast.HAS_EXTENSION
    assert info["openmp"] > 0


OPS = ["mmd", "_mmd_with_grad", "_mmd_backward", "coral", "_coral_backward",
       "hits_to_image", "_hits_to_image_backward", "shower_features", "_shower_features_backward"]


@pytest.mark.parametrize("name", OPS)
def test_ops_registered(name):
    op = getattr(torch.ops.sim2real_fast, name)
    assert op.default._schema.name == f"sim2real_fast::{name}"


@pytest.mark.skipif("S2R_EXPECT_CUDA" not in os.environ, reason="CI sets S2R_EXPECT_CUDA to 0 or 1")
def test_cuda_kernels_built_as_requested():
    expected = os.environ["S2R_EXPECT_CUDA"] == "1"
    info = sim2real_fast.build_info()
    assert info["cuda"] is expected, info
    if expected:
        assert "90" in info["cuda_architectures"] and "80" in info["cuda_architectures"]
    for name in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sim2real_fast::{name}", "CPU"), name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sim2real_fast::{name}", "CUDA") is expected, name


def test_reference_fallback_without_the_compiled_library():
    """Without _C the public functions warn once at import and run the pure-PyTorch references."""
    code = (
        "import sys, warnings; sys.modules['sim2real_fast._C'] = None\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always'); import sim2real_fast as s\n"
        "assert any('compiled library could not be loaded' in str(w.message) for w in caught)\n"
        "import torch; x, y = torch.randn(9, 3), torch.randn(7, 3)\n"
        "assert not s.HAS_EXTENSION and s.build_info()['extension'] is False\n"
        "assert torch.equal(s.mmd(x, y), s.reference.mmd(x, y)) and torch.equal(s.coral(x, y), s.reference.coral(x, y))\n"
        "assert torch.equal(s.grad_reverse(x, 0.5), x)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(__file__))


_GENERIC_CPU_PROBE = """
import torch, sim2real_fast as s2r
from sim2real_fast import reference
g = torch.Generator().manual_seed(0)
x, y = torch.randn(700, 5, generator=g, dtype=torch.float64), torch.randn(600, 5, generator=g, dtype=torch.float64) + 0.3
for est in ("unbiased", "biased"):
    torch.testing.assert_close(s2r.mmd(x.float(), y.float(), estimator=est), reference.mmd(x, y, estimator=est).float(), rtol=2e-4, atol=1e-6)
    a = x.clone().requires_grad_()
    torch.testing.assert_close(torch.autograd.grad(s2r.mmd(a, y, estimator=est), a)[0],
                               torch.autograd.grad(reference.mmd(a, y, estimator=est), a)[0])
offsets, cell = torch.tensor([0, 3, 7]), torch.tensor([0, 1, 1, 2, 0, 2, 13])
energy = torch.rand(7, generator=g) * 10
for dtype in (torch.float32, torch.float64):
    e = energy.to(dtype)
    torch.testing.assert_close(s2r.hits_to_image(offsets, cell, e, n_cells=17, normalize="log1p"),
                               reference.hits_to_image(offsets, cell, e, n_cells=17, normalize="log1p"))
print("ok")
"""


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_each_cpu_build_matches_the_reference(capability):
    """ATEN_CPU_CAPABILITY caps the vectorised loops (built for any CPU, AVX2 and AVX-512): the
    builds the machine does not pick by itself give the same answers."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    probe = subprocess.run([sys.executable, "-I", "-c", _GENERIC_CPU_PROBE], capture_output=True, text=True, env=env)
    assert probe.returncode == 0 and probe.stdout.strip() == "ok", probe.stderr[-2000:]


def test_the_warning_says_what_to_do_from_the_source_tree(tmp_path):
    """Importing the uncompiled checkout from its root is explained: run outside it or install in place."""
    from sim2real_fast._extension import how_to_build

    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "sim2real_fast").mkdir()
    source = how_to_build(tmp_path / "sim2real_fast", tmp_path)
    assert "source tree of the checkout in the current folder" in source and "python -P" in source
    elsewhere = how_to_build(tmp_path / "sim2real_fast", tmp_path / "sim2real_fast")
    assert elsewhere.startswith("Build it with `pip install --no-build-isolation .`")
