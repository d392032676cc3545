"""The prediction store (``predict(..., out=...)``): valid OME-NGFF 0.5, read by the OME-Zarr tools, with
provenance that names the model, and markers and lock where zarr does not look."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import zarr

import segarch

pytest.importorskip("ome_zarr")
pytest.importorskip("ome_zarr_models")


def _image(shape, seed=0):
    from segarch.samples import nuclei

    return nuclei(shape, seed=seed)[0]


@pytest.mark.slow
def test_a_labels_store_is_valid_ngff_05_read_by_ome_zarr_py(tmp_path):
    import ome_zarr_models
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader
    from ome_zarr_models.v05.image_label import ImageLabel

    model = segarch.pretrained.load("unet.nuclei2d")
    image = _image((700, 600), seed=int(np.random.default_rng().integers(1000)))
    expected = segarch.predict(model, image)
    segarch.predict(model, image, out=tmp_path / "labels.zarr")

    group = zarr.open_group(str(tmp_path / "labels.zarr"), mode="r")
    assert group.metadata.zarr_format == 3
    validated = ome_zarr_models.open_ome_zarr(group)  # pydantic models of the NGFF 0.5 spec: raises if invalid
    assert isinstance(validated, ImageLabel)
    properties = group.attrs["ome"]["image-label"]["properties"]
    assert [(p["label-value"], p["class"]) for p in properties] == [(0, "background"), (1, "nucleus")]

    nodes = list(Reader(parse_url(str(tmp_path / "labels.zarr")))())
    assert len(nodes) == 1
    node = nodes[0]
    assert any(isinstance(s, Multiscales) for s in node.specs) and any(isinstance(s, Label) for s in node.specs)
    assert [a["name"] for a in node.metadata["axes"]] == ["y", "x"]
    np.testing.assert_array_equal(np.asarray(node.data[0]), expected)
    assert [tuple(level.shape) for level in node.data][:2] == [(700, 600), (350, 300)]


def test_a_probabilities_store_of_a_time_series_is_a_valid_ngff_05_image(tmp_path):
    import ome_zarr_models
    from ome_zarr_models.v05.image import Image

    model = segarch.pretrained.load("unet.nuclei2d")
    movie = np.stack([_image((96, 80), seed=s) for s in (1, 2)])
    out = segarch.predict(model, movie, axes="TYX", output="probabilities", out=tmp_path / "p.zarr")
    assert out.shape == (2, 2, 96, 80)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert isinstance(ome_zarr_models.open_ome_zarr(group), Image)
    assert [a["type"] for a in group.attrs["ome"]["multiscales"][0]["axes"]] == ["time", "channel", "space", "space"]


def test_provenance_names_the_shipped_model_and_its_architecture(tmp_path):
    model = segarch.pretrained.load("unet.nuclei2d")
    segarch.predict(model, _image((64, 64)), out=tmp_path / "a.zarr")
    settings = zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs["segarch"]["settings"]
    assert settings["model"] == "unet.nuclei2d" and settings["arch"] == "unet"
    assert settings["preprocessing"] == model.preprocessing
    file_model = segarch.load_model(segarch.save_model(model, tmp_path / "mine.safetensors"))
    segarch.predict(file_model, _image((64, 64)), out=tmp_path / "b.zarr")
    assert zarr.open_group(str(tmp_path / "b.zarr"), mode="r").attrs["segarch"]["settings"]["model"] == \
        "mine.safetensors"


@pytest.mark.slow
def test_zarr_sees_no_foreign_objects_in_the_store_during_and_after_a_run(tmp_path):
    model = segarch.pretrained.load("unet.nuclei2d")
    image = _image((1100, 600))
    cancel = threading.Event()

    def progress(done, total):
        if done >= 4:
            cancel.set()

    with pytest.raises(segarch.PredictionCancelled):
        segarch.predict(model, image, tile=64, out=tmp_path / "s.zarr", progress=progress, cancel=cancel)
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # zarr warns about any file or folder it does not recognise
            group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
            members = dict(group.members())
            from segarch.tiling.pyramid import level_shapes

            assert set(members) == {str(k) for k in range(len(level_shapes(image.shape, "YX")))}
        segarch.predict(model, image, tile=64, out=tmp_path / "s.zarr", resume=True)


@pytest.mark.parametrize("axes", [None, "ZYX"])
def test_an_instances_store_is_valid_ngff_05_with_the_axes_it_was_given(tmp_path, axes):
    import ome_zarr_models
    from ome_zarr_models.v05.image_label import ImageLabel

    from segarch.instances import DistanceDecoder, decode_blocks
    from segarch.synthetic import nuclei_sample
    from test_instance_blocks import probabilities_for

    seed = int(np.random.default_rng().integers(1000))
    planes = [probabilities_for(nuclei_sample((72, 64), seed=seed + k).labels, DistanceDecoder()) for k in (0, 1)]
    result = decode_blocks(np.stack(planes), DistanceDecoder(), tmp_path / "objects.zarr", block=32, halo=8,
                           spatial_dims=2, spacing=(0.5, 0.25), axes=axes)
    group = zarr.open_group(str(tmp_path / "objects.zarr"), mode="r")
    assert group.metadata.zarr_format == 3
    assert isinstance(ome_zarr_models.open_ome_zarr(group), ImageLabel)  # raises if not valid NGFF 0.5
    multiscales = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscales["axes"]] == list((axes or "TYX").lower())
    assert multiscales["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.5, 0.25]
    assert np.asarray(result.labels).max() > 0
    with pytest.raises(ValueError, match="`axes` must name the labels' 3 axes"):
        decode_blocks(np.stack(planes), DistanceDecoder(), tmp_path / "other.zarr", spatial_dims=2, axes="CYX")
