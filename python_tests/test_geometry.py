"""Detector geometries: presets, index maps, per-layer and padded views, descriptions."""

import json
import math
import pickle
import sys
from pathlib import Path

import pytest
import torch

from sim2real_fast import geometry as geo

CALOCHALLENGE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "calochallenge"
CALOCHALLENGE_XML = {
    "calochallenge-ds1-photons": ("binning_dataset_1_photons.xml", 368),
    "calochallenge-ds1-pions": ("binning_dataset_1_pions.xml", 533),
    "calochallenge-ds2": ("binning_dataset_2.xml", 45 * 16 * 9),
    "calochallenge-ds3": ("binning_dataset_3.xml", 45 * 50 * 18),
}
#: depth_mm and medium of the ds1 layers (geometry.py's docstring: ATLAS barrel at |eta| 0.225)
DS1_LAYERS = {"layer_0": (11.3, "lar"), "layer_1": (68.6, "pb_lar"), "layer_2": (255.2, "pb_lar"),
              "layer_3": (31.9, "pb_lar"), "layer_12": (298.5, "fe_scint"), "layer_13": (815.8, "fe_scint"),
              "layer_14": (358.2, "fe_scint")}
N_CELLS = {"calogan": 504, "hcal": 7 * 72 * 84} | {name: n for name, (_, n) in CALOCHALLENGE_XML.items()}
PRESETS = sorted(N_CELLS)


def test_available_lists_every_preset():
    assert geo.available() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_sizes(name):
    g = geo.get(name)
    assert g.name == name
    assert g.n_cells == N_CELLS[name]
    assert g.layer_offsets[0] == 0 and len(g.layer_offsets) == g.n_layers + 1
    assert [b - a for a, b in zip(g.layer_offsets, g.layer_offsets[1:])] == [r * c for r, c in g.layer_shapes]
    assert g.padded_shape == (g.n_layers, max(r for r, _ in g.layer_shapes), max(c for _, c in g.layer_shapes))
    assert geo.get(g) is g


def test_calogan_layers():
    g = geo.get("calogan")
    assert g.layer_shapes == ((3, 96), (12, 12), (12, 6))
    assert g.layer_offsets == (0, 288, 432, 504)
    assert [layer.cell_size for layer in g.layers] == [(160.0, 5.0), (40.0, 40.0), (40.0, 80.0)]
    assert [layer.depth_mm for layer in g.layers] == [90.0, 347.0, 43.0]
    layer, row, col = g.cell_to_position(torch.tensor([0, 287, 288, 431, 432, 503]))
    assert layer.tolist() == [0, 0, 1, 1, 2, 2]
    assert row.tolist() == [0, 2, 0, 11, 0, 11]
    assert col.tolist() == [0, 95, 0, 11, 0, 5]


def test_calochallenge_layers():
    photons, pions = geo.get("calochallenge-ds1-photons"), geo.get("calochallenge-ds1-pions")
    # r_edges="0" layers hold no voxels and are left out; the XML ids survive in the names.
    assert [layer.name for layer in photons.layers] == ["layer_0", "layer_1", "layer_2", "layer_3", "layer_12"]
    assert [layer.name for layer in pions.layers] == [f"layer_{i}" for i in (0, 1, 2, 3, 12, 13, 14)]
    assert photons.layer_shapes == ((1, 8), (10, 16), (10, 19), (1, 5), (1, 5))
    ds3 = geo.get("calochallenge-ds3")
    assert ds3.padded_shape == (45, 50, 18)
    assert all(layer.kind == "cylindrical" and len(layer.r_edges) == 19 for layer in ds3.layers)
    assert "binning_dataset_3.xml" in ds3.source


def test_hcal_matches_the_file_layout():
    g = geo.get("hcal")
    assert [layer.name for layer in g.layers] == [f"depth{d}" for d in range(1, 8)]
    assert g.layer_shapes == ((72, 84),) * 7  # (iphi, ieta) as stored per depth
    maps = [torch.rand(10, 72, 84) for _ in range(7)]  # (LS, iphi, ieta) per depth, as in the HDF5
    flat = torch.cat([m.flatten(1) for m in maps], 1)
    torch.testing.assert_close(g.split_layers(flat), maps, rtol=0, atol=0)


@pytest.mark.parametrize("name", PRESETS)
def test_cell_position_round_trip(name):
    g = geo.get(name)
    cells = torch.arange(g.n_cells)
    layer, row, col = g.cell_to_position(cells)
    shapes = torch.tensor(g.layer_shapes)
    assert bool((row < shapes[layer, 0]).all() and (col < shapes[layer, 1]).all())
    assert torch.equal(g.position_to_cell(layer, row, col), cells)
    padded_cell = g.to_padded(cells.double())  # the padded image of the index lands at (layer, row, col)
    assert torch.equal(padded_cell[layer, row, col].long(), cells)


def test_cell_to_position_keeps_batch_shape():
    g = geo.get("calogan")
    cells = torch.tensor([[3, 300], [500, 0]], dtype=torch.int32)
    layer, row, col = g.cell_to_position(cells)
    assert layer.shape == (2, 2) and layer.dtype == torch.int64
    assert torch.equal(g.position_to_cell(layer, row, col), cells.long())
    assert g.position_to_cell(torch.tensor(1), torch.tensor([0, 11]), torch.tensor(11)).tolist() == [299, 431]


def test_out_of_range_indices_name_the_first_bad_one():
    g = geo.get("calogan")
    with pytest.raises(IndexError, match=r"cell index 504 at position \(1, 0\).*\[0, 504\).*'calogan'"):
        g.cell_to_position(torch.tensor([[0, 1], [504, -1]]))
    with pytest.raises(IndexError, match=r"cell index -3 at position \(2,\)"):
        g.cell_to_position(torch.tensor([0, 1, -3, 999]))
    with pytest.raises(IndexError, match=r"\(layer, row, col\) = \(2, 0, 6\) at position \(1,\)"):
        g.position_to_cell(torch.tensor([2, 2]), torch.tensor([0, 0]), torch.tensor([5, 6]))
    with pytest.raises(IndexError, match=r"= \(3, 0, 0\)"):
        g.position_to_cell(torch.tensor(3), torch.tensor(0), torch.tensor(0))
    with pytest.raises(TypeError, match="cell: expected an integer tensor"):
        g.cell_to_position(torch.tensor([1.0]))


@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-pions", "hcal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(), (0,), (5,), (2, 3)])
def test_view_round_trips(name, dtype, batch):
    g = geo.get(name)
    images = torch.rand(*batch, g.n_cells, dtype=dtype)
    layers = g.split_layers(images)
    assert [tuple(x.shape) for x in layers] == [(*batch, r, c) for r, c in g.layer_shapes]
    assert torch.equal(g.join_layers(layers), images)
    padded = g.to_padded(images)
    assert padded.shape == (*batch, *g.padded_shape) and padded.dtype == dtype
    assert torch.equal(g.from_padded(padded), images)
    mask = g.padding_mask()
    assert mask.shape == g.padded_shape and int(mask.sum()) == g.n_cells
    assert bool((padded[..., ~mask] == 0).all())
    for i, x in enumerate(layers):  # each layer sits in the top-left corner of its channel
        rows, cols = g.layer_shapes[i]
        assert torch.equal(padded[..., i, :rows, :cols], x)
        assert bool(mask[i, :rows, :cols].all())


def test_views_on_device(device):
    g = geo.get("calogan")
    images = torch.rand(4, g.n_cells, device=device)
    padded = g.to_padded(images)
    assert padded.device == images.device
    assert torch.equal(g.from_padded(padded), images)
    assert torch.equal(g.padding_mask(device=device), g.padding_mask().to(device))
    cells = torch.tensor([0, 300, 503], device=device)
    assert torch.equal(g.position_to_cell(*g.cell_to_position(cells)), cells)


def test_pickles_without_its_caches():
    g = geo.get("calogan")
    g.to_padded(torch.rand(g.n_cells))  # builds the index tables
    copy = pickle.loads(pickle.dumps(g))
    assert copy == g and "_tables" not in vars(copy)
    assert torch.equal(copy.padding_mask(), g.padding_mask())


def test_from_padded_ignores_padding():
    g = geo.get("calochallenge-ds1-photons")
    padded = torch.rand(4, *g.padded_shape)
    cleaned = torch.where(g.padding_mask(), padded, torch.zeros(()))
    assert torch.equal(g.from_padded(padded), g.from_padded(cleaned))


def test_calochallenge_order_is_r_fastest_then_alpha_then_layer():
    g = geo.get("calochallenge-ds2")
    n_alpha, n_r = 16, 9
    value = torch.arange(n_alpha * n_r, dtype=torch.float64)  # alpha * n_r + r
    images = torch.cat([value + 1000 * layer for layer in range(g.n_layers)])
    padded = g.to_padded(images)
    layer, alpha, r = torch.meshgrid(torch.arange(45), torch.arange(n_alpha), torch.arange(n_r), indexing="ij")
    assert torch.equal(padded, (alpha * n_r + r + 1000 * layer).double())


def test_gradients_flow_through_the_views():
    g = geo.get("calochallenge-ds1-photons")
    images = torch.rand(2, g.n_cells, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g.to_padded, (images,))
    assert torch.autograd.gradcheck(lambda x: g.from_padded(g.to_padded(x) * 2), (images,))
    weights = torch.rand(g.n_cells, dtype=torch.float64)
    (g.to_padded(images * weights) * g.padding_mask()).sum().backward()
    torch.testing.assert_close(images.grad, weights.expand(2, -1))
    split = torch.rand(g.n_cells, requires_grad=True)
    sum(x.sum() for x in g.split_layers(split)).backward()
    assert torch.equal(split.grad, torch.ones(g.n_cells))


def test_view_shape_errors():
    g = geo.get("calogan")
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 504\) cells for geometry 'calogan'"):
        g.to_padded(torch.rand(3, 500))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 3, 12, 96\)"):
        g.from_padded(torch.rand(3, 12, 12))
    with pytest.raises(ValueError, match="expected 3 layers"):
        g.join_layers([torch.rand(3, 96)])
    with pytest.raises(ValueError, match=r"layer 'layer_1' must end in \(12, 12\)"):
        g.join_layers([torch.rand(3, 96), torch.rand(12, 6), torch.rand(12, 6)])


def test_cell_centres():
    calogan = geo.get("calogan").cell_centres(dtype=torch.float64)
    assert calogan.shape == (504, 2)
    # layer_0 (3 x 96 of 160 x 5 mm) around the beam axis: first cell at (-160, -237.5) mm
    torch.testing.assert_close(calogan[0], torch.tensor([-160.0, -237.5], dtype=torch.float64))
    torch.testing.assert_close(calogan[287], torch.tensor([160.0, 237.5], dtype=torch.float64))
    for start, stop in [(0, 288), (288, 432), (432, 504)]:  # every layer is centred
        torch.testing.assert_close(calogan[start:stop].mean(0), torch.zeros(2, dtype=torch.float64))
    ds2 = geo.get("calochallenge-ds2").cell_centres()
    assert ds2.dtype == torch.get_default_dtype()
    step = 2 * math.pi / 16
    torch.testing.assert_close(ds2[0], torch.tensor([-math.pi + step / 2, 4.65 / 2]))
    torch.testing.assert_close(ds2[9 + 8], torch.tensor([-math.pi + 1.5 * step, (37.2 + 41.85) / 2]))
    assert geo.get("calochallenge-ds1-photons").cell_centres()[0, 0] == 0  # a single alpha bin
    with pytest.raises(ValueError, match="geometry 'hcal' layer 'depth1' has no cell_size"):
        geo.get("hcal").cell_centres()


def test_unknown_preset_lists_the_names():
    with pytest.raises(geo.GeometryError, match="calochallenge-ds2.*did you mean calogan") as info:
        geo.get("calogn")
    assert all(name in str(info.value) for name in PRESETS)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-pions", "hcal"])
def test_json_round_trip(name, tmp_path):
    g = geo.get(name)
    path = tmp_path / f"{name}.json"
    g.to_json(path)
    assert geo.get(path) == g == geo.Geometry.from_dict(json.loads(path.read_text()))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_yaml_round_trip(tmp_path):
    yaml = pytest.importorskip("yaml")
    g = geo.get("calogan")
    path = tmp_path / "calogan.yaml"
    path.write_text(yaml.safe_dump(g.to_dict()))
    assert geo.get(path) == g


def test_yaml_without_pyyaml_gives_an_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ImportError, match="pip install pyyaml"):
        geo.Geometry.from_yaml(tmp_path / "g.yaml")


def test_user_geometry_from_dict():
    layers = [{"name": "a", "rows": 2, "cols": 4, "cell_size": [10, 5]}, {"name": "b", "rows": 3, "cols": 1}]
    g = geo.Geometry.from_dict({"name": "strips", "layers": layers})
    assert g.n_cells == 11 and g.padded_shape == (2, 3, 4) and g.layer_offsets == (0, 8, 11)
    assert g.layers[0].cell_size == (10.0, 5.0)
    assert g.to_dict() == {
        "name": "strips",
        "source": "",
        "layers": [
            {"name": "a", "rows": 2, "cols": 4, "cell_size": [10.0, 5.0], "kind": "cartesian"},
            {"name": "b", "rows": 3, "cols": 1, "kind": "cartesian"},
        ],
    }


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"rows": 0}, r"rows: expected a positive int, got 0"),
        ({"cols": None}, r"cols: expected a positive int, got None"),
        ({"colls": 4}, r"colls: unknown key; expected one of name, rows, cols"),
        ({"cell_size": [1]}, r"cell_size: expected \[row_size, col_size\]"),
        ({"kind": "polar"}, r"kind: expected one of \('cartesian', 'cylindrical'\), got 'polar'"),
        ({"kind": "cylindrical", "r_edges": [0, 1]}, r"r_edges: expected 3 increasing numbers"),
        ({"kind": "cylindrical", "r_edges": [0, 2, 1]}, r"r_edges: expected 3 increasing numbers"),
        ({"r_edges": [0, 1, 2]}, r"r_edges: expected null for a cartesian layer"),
        ({"depth_mm": -1}, r"depth_mm: expected a positive number"),
    ],
)
def test_malformed_description_names_file_and_key(tmp_path, layer, message):
    path = tmp_path / "bad.json"
    good = {"name": "a", "rows": 2, "cols": 2}
    path.write_text(json.dumps({"name": "bad", "layers": [good, good | {"name": "b"} | layer]}))
    with pytest.raises(geo.GeometryError, match=rf"bad.json: layers\[1\]\.{message}"):
        geo.get(path)


def test_missing_required_key():
    with pytest.raises(geo.GeometryError, match=r"<dict>: layers\[0\]\.cols: expected a value \(required\)"):
        geo.Geometry.from_dict({"name": "x", "layers": [{"name": "a", "rows": 1}]})


def test_malformed_top_level(tmp_path):
    with pytest.raises(geo.GeometryError, match=r"<dict>: layers: expected a non-empty list"):
        geo.Geometry.from_dict({"name": "x", "layers": []})
    with pytest.raises(geo.GeometryError, match=r"layers\[\]\.name: expected unique layer names, got 'a'"):
        geo.Geometry.from_dict({"name": "x", "layers": [{"name": "a", "rows": 1, "cols": 1}] * 2})
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(geo.GeometryError, match="broken.json: not valid JSON"):
        geo.get(path)


needs_xml = pytest.mark.skipif(not CALOCHALLENGE_DIR.is_dir(), reason=f"{CALOCHALLENGE_DIR} is absent")


@needs_xml
@pytest.mark.parametrize("name", sorted(CALOCHALLENGE_XML))
def test_shipped_json_equals_the_xml(name):
    xml, n_cells = CALOCHALLENGE_XML[name]
    if "ds1" in name:
        layers = [layer.name for layer in geo.get(name).layers]
        extra = {"depth_mm": {k: DS1_LAYERS[k][0] for k in layers}, "medium": {k: DS1_LAYERS[k][1] for k in layers}}
    else:
        extra = {"depth_mm": 3.4, "medium": "w_si"}
    parsed = geo.from_calochallenge_xml(CALOCHALLENGE_DIR / xml, name=name, **extra)
    assert parsed == geo.get(name)
    assert parsed.n_cells == n_cells
    plain = geo.get(CALOCHALLENGE_DIR / xml)  # the XML alone has no depths or media
    assert all(layer.depth_mm is None and layer.medium is None for layer in plain.layers) and plain.medium is None
    assert [(a.rows, a.cols, a.r_edges) for a in plain.layers] == [(b.rows, b.cols, b.r_edges) for b in parsed.layers]


@needs_xml
def test_xml_particle_selection():
    path = CALOCHALLENGE_DIR / "binning_dataset_1_pions.xml"
    assert geo.from_calochallenge_xml(path, particle="pion").n_cells == 533
    assert geo.from_calochallenge_xml(path, particle=211).n_cells == 533
    with pytest.raises(geo.GeometryError, match=r"particle='photon'.*\('pion', '211'\)"):
        geo.from_calochallenge_xml(path, particle="photon")


def test_xml_errors_name_the_file_and_layer(tmp_path):
    path = tmp_path / "binning.xml"
    path.write_text('<Bins><Bin name="photon" pid="22"><Layer id="3" r_edges="0,5,2" n_bin_alpha="1"/></Bin></Bins>')
    with pytest.raises(geo.GeometryError, match=r"binning.xml: <Layer id='3'>: r_edges: expected 3 increasing"):
        geo.get(path)
    path.write_text('<Bins><Bin name="photon" pid="22"><Layer id="3" r_edges="0,5" n_bin_alpha="x"/></Bin></Bins>')
    with pytest.raises(geo.GeometryError, match=r"<Layer id='3'>: expected numeric r_edges and n_bin_alpha"):
        geo.get(path)


def test_xml_depths_and_media_per_layer_or_for_all(tmp_path):
    path = tmp_path / "binning.xml"
    path.write_text('<Bins><Bin name="photon" pid="22"><Layer id="0" r_edges="0,5,20" n_bin_alpha="4"/>'
                    '<Layer id="1" r_edges="0" n_bin_alpha="1"/><Layer id="2" r_edges="0,9" n_bin_alpha="1"/></Bin></Bins>')
    g = geo.from_calochallenge_xml(path, depth_mm=3.4, medium="w_si")
    assert [layer.depth_mm for layer in g.layers] == [3.4, 3.4] and g.medium == "w_si"
    g = geo.from_calochallenge_xml(path, depth_mm={"layer_0": 10, "layer_2": 90},
                                   medium={"layer_0": "lar", "layer_2": "pb_lar"})
    assert [layer.depth_mm for layer in g.layers] == [10.0, 90.0] and g.layer_media() == ("lar", "pb_lar")
    with pytest.raises(geo.GeometryError, match=r"depth_mm: expected one value per kept layer.*missing \['layer_2'\]"):
        geo.from_calochallenge_xml(path, depth_mm={"layer_0": 10})
    with pytest.raises(geo.GeometryError, match=r"medium: .*unknown \['layer_1'\]"):
        geo.from_calochallenge_xml(path, medium={"layer_0": "lar", "layer_1": "lar", "layer_2": "lar"})


def test_media_in_descriptions(tmp_path):
    description = {"name": "stack", "source": "", "medium": "pb_lar", "layers": [
        {"name": "em", "rows": 2, "cols": 2, "cell_size": [10.0, 10.0], "depth_mm": 100.0, "kind": "cartesian"},
        {"name": "had", "rows": 1, "cols": 1, "cell_size": [50.0, 50.0], "depth_mm": 900.0, "kind": "cartesian",
         "medium": "fe_scint"},
    ]}
    g = geo.Geometry.from_dict(description)
    assert g.layer_media() == ("pb_lar", "fe_scint") and g.to_dict() == description
    g.to_json(tmp_path / "stack.json")
    assert geo.get(tmp_path / "stack.json") == g
    assert pickle.loads(pickle.dumps(g)) == g
    for bad in ("Pb LAr", 3, ""):
        with pytest.raises(geo.GeometryError, match=r"medium: expected a medium name"):
            geo.Geometry.from_dict(description | {"medium": bad})
        with pytest.raises(geo.GeometryError, match=r"layers\[1\]\.medium: expected a medium name"):
            geo.Geometry.from_dict(description | {"layers": [description["layers"][0],
                                                             description["layers"][1] | {"medium": bad}]})


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "hcal"])
def test_shower_presets_have_depths_and_known_media(name):
    from sim2real_fast.simulate.medium import MEDIA

    g = geo.get(name)
    assert all(layer.depth_mm > 0 for layer in g.layers)
    assert all(medium in MEDIA for medium in g.layer_media())
