"""``segarch.predict(model, image, output="panoptic")``: a Panoptic-DeepLab's classes and objects through the tiled
path (tiles smaller than the image, objects across block seams), equal to the whole-image decoding; out of core
into a Zarr group of two label images, resumable after a cancel; refusals that name the parameter."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr

import segarch
from segarch.instances import match
from segarch.instances.blocks import DecodingCancelled
from panoptic_helpers import (CLASS_NAMES, cancel_in_the_decoding, trained_efficientps, trained_panoptic_model,
                              whole_image_panoptic)

pytestmark = pytest.mark.slow  # one training of 300 steps (about 20 s), shared by the module

TILED = dict(tile=64, overlap=0.5, device="cpu", axes="YX")
BLOCKS = dict(block=48, halo=24)


@pytest.fixture(scope="module")
def trained():
    return trained_panoptic_model(0)


def _pairs(reference: np.ndarray, found: np.ndarray) -> dict[int, int]:
    """Reference object → the found object covering most of it (IoU > 0.5)."""
    pairs = {}
    for ref in np.unique(reference[reference > 0]):
        ids, counts = np.unique(found[reference == ref], return_counts=True)
        best = ids[np.argmax(np.where(ids > 0, counts, -1))]
        if best > 0:
            union = np.logical_or(reference == ref, found == best).sum()
            if np.logical_and(reference == ref, found == best).sum() > 0.5 * union:
                pairs[int(ref)] = int(best)
    return pairs


def test_tiled_panoptic_equals_the_whole_image_decoding(trained):
    model, image, labels, classes = trained
    whole = whole_image_panoptic(model, image)
    result, report = segarch.predict(model, image, output="panoptic", **TILED,
                                     instance_options={**BLOCKS, "return_report": True})
    assert result.classes.dtype == np.uint16 and result.instances.dtype == np.uint32 and result.panoptic is None
    assert result.instances.shape == image.shape
    found = result.instances.astype(np.int64)
    assert report["objects"] == int(whole.instances.max()) == 2
    assert report["merged_across_seams"] >= 1  # the squares cross the block seams
    pairs = _pairs(whole.instances, found)
    assert len(pairs) == 2
    for ref, obj in pairs.items():  # each object with the class the whole-image fusion gives it
        assert int(result.classes[found == obj][0]) == int(whole.classes[ref - 1])
        assert len(np.unique(result.classes[found == obj])) == 1
    assert match(whole.instances, found).tp[0] == 2
    assert (result.classes == whole.semantic).mean() > 0.99
    # and right against the truth: one object per square, of the square's class, stuff elsewhere
    for square in (1, 2):
        inside = found[labels == square]
        assert (inside > 0).mean() > 0.8 and len(np.unique(inside[inside > 0])) == 1
        assert np.bincount(result.classes[labels == square]).argmax() == square
    assert report["objects_per_class"] == {"round": 1, "bright": 1}
    table = report["measurements"]
    assert sorted(table["class"].tolist()) == [1, 2] and set(table["class_name"]) == {"round", "bright"}
    assert (found[classes == 0] > 0).mean() < 0.01 and set(np.unique(result.classes)) <= {0, 1, 2}


def test_label_divisor_gives_the_combined_ids(trained):
    model, image, labels, _ = trained
    result = segarch.predict(model, image, output="panoptic", **TILED,
                             instance_options={**BLOCKS, "label_divisor": 1000})
    expected = np.where(result.instances > 0, result.classes.astype(np.int64) * 1000 + 1,
                        result.classes.astype(np.int64))  # one object per class: number 1 in its class
    assert np.array_equal(result.panoptic, expected)
    assert set(np.unique(result.panoptic[labels > 0])) <= {0, 1001, 2001}


def test_out_of_core_zarr_resumes_after_a_cancel(trained, tmp_path):
    model, image, labels, _ = trained
    source = tmp_path / "scene.zarr"
    zarr.save_array(str(source), image)
    reference = segarch.predict(model, image, output="panoptic", **TILED, instance_options=BLOCKS)
    out = tmp_path / "panoptic.zarr"
    cancel, progress = cancel_in_the_decoding()  # once the network pass is complete

    with pytest.raises(DecodingCancelled):
        segarch.predict(model, str(source), output="panoptic", out=str(out), progress=progress, cancel=cancel,
                        **TILED, instance_options=BLOCKS)
    assert (tmp_path / "panoptic.zarr.heads").is_dir()  # kept for the resume
    assert not zarr.open_group(str(out), mode="r").attrs["segarch"]["complete"]
    result, report = segarch.predict(model, str(source), output="panoptic", out=str(out), resume=True, **TILED,
                                     instance_options={**BLOCKS, "return_report": True})
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["ome"]["labels"] == ["classes", "instances"] and group.attrs["segarch"]["complete"]
    assert np.array_equal(group["instances/0"][:], reference.instances)
    assert np.array_equal(group["classes/0"][:], reference.classes)
    assert np.array_equal(result.classes[:], reference.classes)
    props = group["classes"].attrs["ome"]["image-label"]["properties"]
    assert [p["class"] for p in props] == CLASS_NAMES
    assert not (tmp_path / "panoptic.zarr.heads").exists()  # removed once complete
    table = (tmp_path / "panoptic_objects.csv").read_text() if (tmp_path / "panoptic_objects.csv").exists() else \
        None
    assert report["table"].startswith(str(tmp_path / "panoptic_objects"))
    if table is not None:
        assert "class" in table.splitlines()[0].split(",")
    # a finished run resumed again: read back, nothing recomputed
    again = segarch.predict(model, str(source), output="panoptic", out=str(out), resume=True, **TILED,
                            instance_options=BLOCKS)
    assert np.array_equal(again.instances[:], reference.instances)


@pytest.mark.parametrize("value,allowed", [((0, 5), "from 0 to 2"), ((), "at least one"), ("1", "from 0 to 2")])
def test_bad_thing_classes_are_refused_before_anything_is_written(trained, tmp_path, value, allowed):
    model, image, _, _ = trained
    out = tmp_path / "bad.zarr"
    with pytest.raises(ValueError, match=rf"`thing_classes` must be distinct class indices.*{allowed}.*got "
                                         rf"{__import__('re').escape(repr(value))}"):
        segarch.predict(model, image, output="panoptic", out=str(out), **TILED,
                        instance_options={"thing_classes": value})
    assert not out.exists() and not (tmp_path / "bad.zarr.heads").exists()


def test_bad_label_divisor_and_what_the_engine_refuses_write_nothing(trained, tmp_path):
    model, image, _, _ = trained
    with pytest.raises(ValueError, match=r"`label_divisor` must be an integer >= 2.*got 1\b"):
        segarch.predict(model, image, output="panoptic", out=str(tmp_path / "x.zarr"), **TILED,
                        instance_options={"label_divisor": 1})
    with pytest.raises(ValueError, match=r"`tile`=40 must be a multiple of the model's size_divisor 16"):
        segarch.predict(model, image, output="panoptic", out=str(tmp_path / "x.zarr"), **{**TILED, "tile": 40})
    assert not any(tmp_path.iterdir())


def test_a_local_cluster_run_equals_the_in_process_run(trained, tmp_path):
    import torch
    from distributed import Client, LocalCluster, get_task_stream

    model, image, _, _ = trained
    options = dict(output="panoptic", **TILED, instance_options={**BLOCKS, "label_divisor": 100})
    here = segarch.predict(model, image, out=tmp_path / "here.zarr", **options)
    torch.set_num_threads(1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with get_task_stream(client) as stream:
            there = segarch.predict(model, image, out=tmp_path / "there.zarr", scheduler=client, **options)
    ran = {t["key"].split("-")[0] for t in stream.data}
    assert {"_decode_task", "_final_task"} <= ran  # the blocks were grouped on the workers
    for name in ("classes", "instances", "panoptic"):
        assert np.array_equal(getattr(there, name)[:], getattr(here, name)[:])
    values = set(np.unique(here.panoptic[:]).tolist())
    assert here.instances[:].max() == 2 and {0, 101, 201} <= values <= {0, 1, 2, 101, 201}
    assert (tmp_path / "there_objects.csv").read_text() == (tmp_path / "here_objects.csv").read_text()


def test_efficientps_is_fused_per_tile_and_grouped_across_seams():
    """Top-down EfficientPS: each tile's detections fused with its semantic head (FusionAsChannels), blended, grouped
    block by block: the same objects, each of the same class, as the fusion on the whole image."""
    import torch

    from segarch.instances.efficientps import EfficientPSFusion

    model, image, labels, _ = trained_efficientps(0)
    with torch.no_grad():
        whole = EfficientPSFusion(thing_classes=model.network.thing_classes)(
            model.network(torch.from_numpy(model.preprocess(image[None]))[None])[0])
    result, report = segarch.predict(model, image, output="panoptic", **{**TILED, "blend": "crop"},
                                     instance_options={**BLOCKS, "return_report": True})
    found = result.instances.astype(np.int64)
    assert report["objects"] == int(whole.instances.max()) == 2 and report["architecture"] == "efficientps"
    pairs = _pairs(whole.instances, found)
    assert len(pairs) == 2
    for ref, obj in pairs.items():
        assert set(np.unique(result.classes[found == obj])) == {int(whole.classes[ref - 1])}
    for square in (1, 2):  # one object per square, of the square's class
        inside = found[labels == square]
        assert (inside > 0).mean() > 0.8 and len(np.unique(inside[inside > 0])) == 1
        assert np.bincount(result.classes[labels == square]).argmax() == square
    assert (result.classes == np.where(whole.semantic < 0, 0, whole.semantic)).mean() > 0.98
    with pytest.raises(ValueError, match=r"`thing_classes`=\[1\]: an EfficientPS detects the thing classes it was "
                                         r"built with, \[1, 2\]"):
        segarch.predict(model, image, output="panoptic", **TILED, instance_options={"thing_classes": [1]})


def test_store_state_tells_a_finished_panoptic_group_from_an_unfinished_one(trained, tmp_path):
    from segarch.destinations import store_state

    model, image, _, _ = trained
    out = tmp_path / "p.zarr"
    cancel = threading.Event()

    def progress(done, total):
        if done > 0 and out.exists():  # the group exists once the network pass is done
            cancel.set()

    with pytest.raises(DecodingCancelled):
        segarch.predict(model, image, output="panoptic", out=str(out), progress=progress, cancel=cancel, **TILED,
                        instance_options=BLOCKS)
    assert store_state(out) == "incomplete"
    segarch.predict(model, image, output="panoptic", out=str(out), resume=True, **TILED, instance_options=BLOCKS)
    assert store_state(out) == "complete"
