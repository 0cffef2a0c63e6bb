"""export_model: TorchScript and ONNX files of CaloCNN (and OccupancyViT) that reproduce the eager model."""

import sys

import pytest
import torch

from sim2real_fast.export import ExportMismatchError, export_model
from sim2real_fast.models import CaloCNN, OccupancyViT

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # torch >= 2.13


def showers(n, seed):
    """(n, 504) CaloGAN-like cell energies in MeV: mostly empty cells, a few up to ~10 GeV."""
    generator = torch.Generator().manual_seed(seed)
    hit = torch.rand(n, 504, generator=generator) < 0.2
    return torch.where(hit, torch.rand(n, 504, generator=generator) ** 4 * 1e4, 0.0)


@pytest.fixture(scope="module")
def calo_export(tmp_path_factory):
    torch.manual_seed(0)
    model = CaloCNN().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out_dir = tmp_path_factory.mktemp("export")
    paths = export_model(model, showers(3, seed=1), out_dir, name="calo")
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return model.eval(), out_dir, paths


def eager_probs(model, x):
    with torch.no_grad():
        return torch.softmax(model(x), 1)


def test_files_appear_complete_and_alone(calo_export):
    _, out_dir, paths = calo_export
    assert paths == {"torchscript": out_dir / "calo.pt", "onnx": out_dir / "calo.onnx"}
    assert sorted(p.name for p in out_dir.iterdir()) == ["calo.onnx", "calo.pt"]  # no temporary files left


def test_torchscript_matches_eager_on_another_batch_size(calo_export):
    model, _, paths = calo_export
    loaded = torch.jit.load(str(paths["torchscript"]))
    x = showers(7, seed=2)
    got = loaded(x)
    assert got.shape == (7, 3)
    torch.testing.assert_close(got, eager_probs(model, x), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.sum(1), torch.ones(7))


def test_onnx_matches_eager_on_another_batch_size(calo_export):
    onnxruntime = pytest.importorskip("onnxruntime")
    model, _, paths = calo_export
    session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["inputs"]
    assert session.get_inputs()[0].shape[1:] == [504] and isinstance(session.get_inputs()[0].shape[0], str)
    x = showers(11, seed=3)
    (got,) = session.run(None, {"inputs": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), eager_probs(model, x), atol=1e-5, rtol=0)


def test_one_event_example_still_gives_a_free_batch(tmp_path):
    torch.manual_seed(1)
    model = CaloCNN(n_classes=2).eval()
    paths = export_model(model, showers(1, seed=4), tmp_path, name="one", formats=("torchscript",))
    x = showers(5, seed=5)
    torch.testing.assert_close(torch.jit.load(str(paths["torchscript"]))(x), eager_probs(model, x), atol=1e-5, rtol=0)


class BatchDependent(torch.nn.Module):
    """Traces to a constant branch: right for the example's batch size, wrong for others."""

    def forward(self, x):
        return torch.stack([x.sum(1), -x.sum(1)], 1) if x.shape[0] <= 3 else torch.zeros(len(x), 2)


def test_verify_catches_a_batch_dependent_trace(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"old")
    with pytest.raises(ExportMismatchError, match="torchscript export of BatchDependent .* on a batch of 4"):
        export_model(BatchDependent(), torch.rand(3, 5), tmp_path, name="m", formats=("torchscript",))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"] and (tmp_path / "m.pt").read_bytes() == b"old"
    export_model(BatchDependent(), torch.rand(3, 5), tmp_path, name="m", formats=("torchscript",), verify=False)
    assert (tmp_path / "m.pt").read_bytes() != b"old"


class Untraceable(torch.nn.Module):
    """Runs eagerly, fails while the file is being written."""

    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("cannot be traced")
        return x


def test_failed_export_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="cannot be traced"):
        export_model(Untraceable(), torch.rand(2, 5), tmp_path, name="m", formats=("torchscript",))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"] and (tmp_path / "m.pt").read_bytes() == b"old"


def test_onnx_without_onnxruntime_is_written_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.warns(UserWarning, match="onnxruntime is not installed, the ONNX file is not verified"):
        paths = export_model(CaloCNN(), showers(2, seed=7), tmp_path, name="m", formats=("onnx",))
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"] and paths["onnx"].stat().st_size > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"formats": ("torchscript", "tflite")}, "formats"),
        ({"formats": ()}, "formats"),
        ({"name": "sub/model"}, "name"),
        ({"name": ""}, "name"),
        ({"example_inputs": torch.rand(504)}, "example_inputs"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    arguments = {"example_inputs": showers(2, seed=6), "name": "m", **kwargs}
    with pytest.raises(ValueError, match=match):
        export_model(CaloCNN(), arguments.pop("example_inputs"), tmp_path, **arguments)
    assert not list(tmp_path.iterdir())


def test_occupancy_vit_both_formats(tmp_path):
    try:
        model = OccupancyViT((20, 30), 2, patch_size=(6, 8), embed_dim=16, depth=2, num_heads=2, log_scale=8.0)
    except ImportError as error:
        pytest.skip(str(error))
    formats = ("torchscript", "onnx") if _has("onnxruntime") else ("torchscript",)
    maps = torch.poisson(torch.full((4, 2, 20, 30), 300.0))
    paths = export_model(model.eval(), maps[:2], tmp_path, name="vit", formats=formats)  # verified against eager
    loaded = torch.jit.load(str(paths["torchscript"]))
    torch.testing.assert_close(loaded(maps), eager_probs(model, maps), atol=1e-5, rtol=0)


def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True
