"""A panoptic result as one ``.tif`` (bands: classes, instances, panoptic): ``segarch predict ... OUT.tif --output
panoptic`` and ``segarch convert`` of a panoptic ``.zarr``; a GeoTIFF in gives a COG out with the same CRS and
transform, anything else an OME-TIFF with named channels; a cancelled run resumes from its partial store."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tifffile
import zarr

import segarch
from segarch.batch import partial_store, predict_file
from segarch.instances.blocks import DecodingCancelled
from segarch.io.convert import convert_store
from panoptic_helpers import cancel_in_the_decoding, trained_panoptic_model
from test_cli import segarch_cli

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

pytestmark = pytest.mark.slow  # one training of 300 steps (about 20 s), and the `segarch` command in a subprocess

TILED = dict(tile=64, overlap=0.5, device="cpu", axes="YX")
BLOCKS = dict(block=48, halo=24)


@pytest.fixture(scope="module")
def trained():
    return trained_panoptic_model(0)


def _ome_bands(path) -> dict[str, np.ndarray]:
    """An OME-TIFF's channels by their OME names, read by tifffile (level 0)."""
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        names = [c.get("Name") for c in ElementTree.fromstring(tif.ome_metadata).iter() if c.tag.endswith("}Channel")]
        series = tif.series[0]
        data = np.moveaxis(series.levels[0].asarray(), series.axes.index("C"), 0)
    return dict(zip(names, data))


def test_a_geotiff_in_gives_one_cog_with_named_bands_and_the_georeference(trained, tmp_path):
    model, image, labels, _ = trained
    source = tmp_path / "scene.tif"
    transform = from_origin(399960.0, 5300040.0, 10.0, 10.0)
    with rasterio.open(source, "w", driver="GTiff", width=image.shape[1], height=image.shape[0], count=1,
                       dtype="float32", crs="EPSG:32633", transform=transform) as ds:
        ds.write(image, 1)
    model_file = tmp_path / "panoptic.safetensors"
    segarch.save_model(model, model_file)
    out = tmp_path / "result.tif"
    args = ["predict", str(source), str(out), "--model", str(model_file), "--output", "panoptic", "--thing-classes",
            "1", "2", "--tile", "64", "--overlap", "0.5", "--device", "cpu", "--axes", "YX"]
    result = segarch_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "objects: 2" in result.stdout
    assert not partial_store(out).exists() and not (tmp_path / "result.tif.partial.zarr.heads").exists()
    expected = segarch.predict(model, str(source), output="panoptic", tile=64, overlap=0.5, device="cpu", axes="YX",
                               instance_options={"thing_classes": [1, 2]})
    with rasterio.open(source) as src, rasterio.open(out) as ds:
        assert ds.crs == src.crs and ds.transform == src.transform
        assert ds.descriptions == ("classes", "instances") and ds.count == 2
        assert ds.tags().get("segarch_kind") == "labels" and "segarch_provenance" in ds.tags()
        assert ds.overviews(1) == [] or ds.overviews(1)[0] == 2
        classes, instances = ds.read()
    assert np.array_equal(classes, expected.classes) and np.array_equal(instances, expected.instances)
    for square in (1, 2):  # one object per square, of its class
        assert len(np.unique(instances[labels == square])) <= 2
        assert np.bincount(classes[labels == square]).argmax() == square
    assert list(tmp_path.glob("result_objects.*"))  # the table beside the .tif
    again = segarch_cli(*args, "--resume")
    assert again.returncode == 0 and "already complete" in again.stdout


def test_a_cancelled_tif_run_resumes_into_an_ome_tiff_with_the_panoptic_band(trained, tmp_path):
    model, image, _, _ = trained
    source = tmp_path / "scene.npy"
    np.save(source, image)
    reference = segarch.predict(model, image, output="panoptic", **TILED,
                                instance_options={**BLOCKS, "label_divisor": 1000})
    target = tmp_path / "scene.tif"
    settings = dict(output="panoptic", **TILED, instance_options={**BLOCKS, "label_divisor": 1000})
    cancel, progress = cancel_in_the_decoding()  # once the network pass is complete

    with pytest.raises(DecodingCancelled):
        predict_file(model, source, target, {**settings, "cancel": cancel}, progress=progress)
    assert not target.exists() and partial_store(target).is_dir()  # the finished part is kept, nothing converted
    assert not zarr.open_group(str(partial_store(target)), mode="r").attrs["segarch"]["complete"]
    with pytest.raises(ValueError, match="unfinished panoptic result"):  # a partial is never converted
        convert_store(partial_store(target), tmp_path / "half.tif")
    refused = segarch_cli("predict", str(source), str(target), "--model", "panoptic_deeplab", "--output", "panoptic")
    assert refused.returncode == 2 and "--resume to continue it" in refused.stderr
    row = predict_file(model, source, target, settings, resume=True)
    assert row.status == "done" and row.extra["resumed"] and row.objects == {"objects": 2}
    assert target.is_file() and not partial_store(target).exists()
    bands = _ome_bands(target)
    assert list(bands) == ["classes", "instances", "panoptic"]
    assert all(b.dtype == np.uint32 for b in bands.values())
    assert np.array_equal(bands["classes"], reference.classes)
    assert np.array_equal(bands["instances"], reference.instances)
    assert np.array_equal(bands["panoptic"], reference.panoptic)
    assert set(np.unique(bands["panoptic"][bands["instances"] > 0])) == {1001, 2001}
    opened = segarch.io.open_image(target)  # the project's reader sees labels with a channel axis
    assert opened.labels and opened.axes == "CYX" and opened.levels[0].shape[0] == 3


def test_convert_turns_a_panoptic_zarr_into_one_tif_and_out_tif_is_refused_by_name(trained, tmp_path):
    model, image, _, _ = trained
    store = tmp_path / "scene.zarr"
    result = segarch.predict(model, image, output="panoptic", out=str(store), **TILED, instance_options=BLOCKS)
    converted = segarch_cli("convert", str(store), str(tmp_path / "scene.tif"), "--vectors",
                            str(tmp_path / "objects.geojson"))
    assert converted.returncode == 0, converted.stderr
    features = json.loads((tmp_path / "objects.geojson").read_text())["features"]  # the objects traced
    assert len(features) == 2
    bands = _ome_bands(tmp_path / "scene.tif")
    assert list(bands) == ["classes", "instances"]
    assert np.array_equal(bands["classes"], result.classes[:]) and np.array_equal(bands["instances"],
                                                                                 result.instances[:])
    assert bands["instances"].max() == 2
    # segarch.predict writes a Zarr group: a .tif `out` is refused before any work, naming `out` and the way
    with pytest.raises(ValueError, match=r"`out`=.*scene2\.tif.*convert_store"):
        segarch.predict(model, image, output="panoptic", out=str(tmp_path / "scene2.tif"), **TILED)
    assert not (tmp_path / "scene2.tif").exists() and not (tmp_path / "scene2.tif.heads").exists()


def test_a_3d_panoptic_store_becomes_an_ome_tiff_of_czyx_with_its_voxel_size(tmp_path):
    from segarch import zoo

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = segarch.Model.from_zoo("panoptic_deeplab", spatial_dims=3, in_channels=1, out_channels=3,
                                   **zoo.card("panoptic_deeplab").test_config)
    model.trained = True  # untrained weights: the file must hold what the store holds, whatever it is
    image = np.random.default_rng().random((20, 40, 36)).astype(np.float32)
    store = tmp_path / "stack.zarr"
    result = segarch.predict(model, image, output="panoptic", out=str(store), tile=32, device="cpu", axes="ZYX",
                             pixel_size=(2.0, 0.5, 0.5), instance_options={"label_divisor": 100000, "table": False})
    convert_store(store, tmp_path / "stack.tif")
    with tifffile.TiffFile(tmp_path / "stack.tif") as tif:
        series = tif.series[0]
        assert series.axes == "CZYX"
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
        assert float(pixels.get("PhysicalSizeZ")) == 2.0 and float(pixels.get("PhysicalSizeX")) == 0.5
        data = series.levels[0].asarray()
    assert np.array_equal(data[0], result.classes[:]) and np.array_equal(data[1], result.instances[:])
    assert np.array_equal(data[2], result.panoptic[:])
