"""segarch.predict(output="instances"): labels, the table beside the store, pixel sizes, a cluster run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import segarch
from segarch.instances import BoundaryDecoder, DistanceDecoder, match
from segarch.synthetic import nuclei_sample
from test_instance_blocks import probabilities_for
from test_instance_predict import ProbabilityNet, oracle_model


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def test_predict_output_instances_writes_labels_report_and_table(tmp_path):
    import zarr

    decoder = DistanceDecoder()
    s = nuclei_sample((150, 170), seed=int(np.random.default_rng().integers(1000)), hard=True)
    image = probabilities_for(s.labels, decoder, s.spacing)
    model = oracle_model(decoder, 2)
    options = dict(axes="CYX", tile=64, device="cpu")
    in_memory = segarch.predict(model, image, output="instances", **options)
    assert in_memory.dtype == np.uint32 and in_memory.shape == s.labels.shape
    assert match(s.labels, in_memory).f1(0.5) > 0.85
    out = tmp_path / "cells.zarr"
    labels = segarch.predict(model, image, output="instances", out=out, instance_options={"block": 64, "halo": 40},
                             **options)
    assert isinstance(labels, zarr.Array) and np.array_equal(labels[:], in_memory)
    report = zarr.open_group(str(out), mode="r").attrs["segarch"]["instances"]
    assert report["objects"] == in_memory.max() and report["merged_across_seams"] > 0
    table_file = tmp_path / "cells_objects.csv"
    assert report["table"] == str(table_file)
    rows = read_csv(table_file)
    assert [int(r["label"]) for r in rows] == list(range(1, int(in_memory.max()) + 1))
    sizes = np.bincount(in_memory.ravel())[1:]
    assert [int(r["area_pixels"]) for r in rows] == sizes.tolist()
    assert report["median_size_pixels"] == float(np.median(sizes))
    # mean intensity of channel 0 (the background probability) over each object, from the image itself
    first = in_memory == 1
    assert float(rows[0]["mean_intensity_c0"]) == pytest.approx(float(image[0][first].mean()), rel=1e-5)


def test_instances_of_a_semantic_model_or_bad_pixel_sizes_are_refused_and_nothing_is_written(tmp_path):
    semantic = segarch.Model.from_zoo("unet", spatial_dims=2, out_channels=2, features=(4, 8, 16, 32))
    image = nuclei_sample((64, 64), seed=2).image
    out = tmp_path / "never.zarr"
    with pytest.raises(ValueError, match="`output`='instances' is not available") as err:
        segarch.predict(semantic, image, output="instances", out=out)
    assert "`output`='labels'" in str(err.value)
    model = oracle_model(DistanceDecoder(), 2)
    probabilities = probabilities_for(nuclei_sample((64, 64), seed=3).labels, DistanceDecoder())
    for bad in (0, -1.0, (1.0, 0.0), (1.0, 2.0, 3.0), float("nan")):
        with pytest.raises(ValueError, match="`pixel_size` must be 2 positive pixel sizes"):
            segarch.predict(model, probabilities, axes="CYX", output="instances", out=out, pixel_size=bad)
    with pytest.raises(ValueError, match="`pixel_size` applies to an image opened from a file"):
        segarch.predict(model, probabilities, axes="CYX", pixel_size=1.0)
    assert not out.exists() and not (tmp_path / "never.zarr.probabilities").exists()
    assert list(tmp_path.iterdir()) == []


class ShapeRecorder(ProbabilityNet):
    """The oracle network, recording the spatial shapes of the tiles it is given."""

    seen: list = []

    def forward(self, x):
        ShapeRecorder.seen.append(tuple(x.shape[2:]))
        return super().forward(x)


def test_an_image_at_another_pixel_size_is_resampled_to_the_models_and_back(tmp_path):
    from segarch import io

    decoder = BoundaryDecoder()
    s = nuclei_sample((24, 96, 96), seed=5, hard=True)  # anisotropic voxels: s.spacing has a larger Z step
    z_step = float(s.spacing[0])
    assert z_step > 1
    image = probabilities_for(s.labels, decoder, s.spacing)
    model = segarch.Model(ShapeRecorder(decoder.channels, 3), "unet", spatial_dims=3, in_channels=decoder.channels,
                          out_channels=decoder.channels, class_names=decoder.class_names, preprocessing=[],
                          pixel_size=[1.0, 1.0, 1.0])
    model.trained = True
    ShapeRecorder.seen = []
    labels, report = segarch.instances.predict_instances(model, image, axes="CZYX", pixel_size=s.spacing,
                                                         tile=(96, 96, 96), device="cpu", return_report=True)
    expected_z = int(round(24 * z_step))
    # the network saw Z times the step
    assert ShapeRecorder.seen and all(shape[0] >= expected_z for shape in ShapeRecorder.seen)
    assert report["pixel_size"]["resampled"] is True and report["pixel_size"]["source"] == "pixel_size="
    assert "resampled the image" in report["pixel_size"]["note"]
    assert labels.shape == s.labels.shape  # back on the image's grid
    assert match(s.labels, labels).f1(0.5) > 0.8
    # The pixel size from an OME-TIFF's metadata does the same, and a matching one is left alone.
    path = tmp_path / "stack.tif"
    io.write_tiff(path, image, axes="CZYX", scale=(1.0, *s.spacing))
    _, from_file = segarch.instances.predict_instances(model, str(path), tile=(96, 96, 96), device="cpu",
                                                       return_report=True)
    assert from_file["pixel_size"]["source"] == "metadata" and from_file["pixel_size"]["resampled"] is True
    ShapeRecorder.seen = []
    _, same = segarch.instances.predict_instances(model, image, axes="CZYX", pixel_size=1.05, tile=(32, 96, 96),
                                                  device="cpu", return_report=True)
    assert same["pixel_size"]["resampled"] is False and "not resampled" in same["pixel_size"]["note"]
    assert all(shape[0] <= 32 for shape in ShapeRecorder.seen)


@pytest.mark.slow
def test_a_local_cluster_run_equals_the_in_process_run(tmp_path):
    from distributed import Client, LocalCluster

    decoder = DistanceDecoder()
    s = nuclei_sample((260, 230), seed=int(np.random.default_rng().integers(1000)), hard=True)
    image = probabilities_for(s.labels, decoder, s.spacing)
    model = oracle_model(decoder, 2)
    options = dict(axes="CYX", tile=64, device="cpu", output="instances",
                   instance_options={"block": 96, "halo": 40})
    here = segarch.predict(model, image, out=tmp_path / "here.zarr", **options)
    torch.set_num_threads(1)
    from distributed import get_task_stream

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with get_task_stream(client) as stream:
            there = segarch.predict(model, image, out=tmp_path / "there.zarr", scheduler=client, **options)
        assert len(client.run(lambda: 1)) == 2
    # the network regions and both block steps of the decoding ran on the workers, on both of them
    ran = {(t["key"].split("-")[0], t["worker"]) for t in stream.data}
    assert {name for name, _ in ran} >= {"_decode_task", "_final_task"}
    assert len({worker for name, worker in ran if name == "_decode_task"}) == 2
    assert np.array_equal(there[:], here[:]) and here[:].max() > 50
    assert (tmp_path / "there_objects.csv").read_text() == (tmp_path / "here_objects.csv").read_text()


def test_the_pixel_size_of_an_ome_zarr_image_is_read_from_its_metadata(tmp_path):
    """Without `pixel_size=`, the image's pixel size comes from its OME-Zarr scale; the network sees the model's."""
    from segarch import io

    decoder = DistanceDecoder()
    s = nuclei_sample((70, 80), seed=int(np.random.default_rng().integers(1000)), hard=True)
    image = probabilities_for(s.labels, decoder, s.spacing)
    model = segarch.Model(ShapeRecorder(decoder.channels, 2), "unet", spatial_dims=2, in_channels=decoder.channels,
                          out_channels=decoder.channels, class_names=decoder.class_names, preprocessing=[],
                          pixel_size=[0.25, 0.25])
    model.trained = True
    coarse = tmp_path / "coarse.ome.zarr"  # pixels twice the model's: resampled up for the network, labels back
    io.write_ome_zarr(coarse, image, axes="CYX", scale=(1.0, 0.5, 0.5))
    ShapeRecorder.seen = []
    labels, report = segarch.instances.predict_instances(model, str(coarse), tile=256, device="cpu",
                                                         return_report=True)
    assert report["pixel_size"]["source"] == "metadata" and report["pixel_size"]["resampled"] is True
    assert "resampled the image" in report["pixel_size"]["note"]
    assert max(shape for shapes in ShapeRecorder.seen for shape in shapes) >= 140  # twice the image's 70 × 80
    assert labels.shape == s.labels.shape and match(s.labels, labels).f1(0.5) > 0.85
    same = tmp_path / "same.ome.zarr"  # within 10% of the model's: left alone
    io.write_ome_zarr(same, image, axes="CYX", scale=(1.0, 0.26, 0.26))
    ShapeRecorder.seen = []
    _, report = segarch.instances.predict_instances(model, str(same), tile=256, device="cpu", return_report=True)
    assert report["pixel_size"]["source"] == "metadata" and report["pixel_size"]["resampled"] is False
    assert max(shape for shapes in ShapeRecorder.seen for shape in shapes) <= 80
