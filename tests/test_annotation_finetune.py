"""Fine-tuning an extreme-point model on annotated objects given by their painted regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from segarch import pretrained
from segarch.prompts import object_scene
from segarch.prompts.label_store import LabelStore
from segarch.training.annotations import annotation_examples, fine_tune_on_annotations


def _regions(labels, lead=()):
    return [(v, lead + box) for v, box in enumerate(ndimage.find_objects(labels), start=1) if box is not None]


def test_examples_hold_one_object_each_read_from_a_zarr_store(tmp_path):
    seed = int(np.random.default_rng().integers(1 << 20))
    image, labels = object_scene((120, 120), seed=seed)
    stack_image = np.stack([np.zeros_like(image), image])
    store = LabelStore.create(tmp_path / "l.zarr", stack_image.shape, chunks=(1, 32, 32))
    store.array[1] = labels
    regions = _regions(labels, lead=(1,))
    images, masks = annotation_examples(stack_image, store.array, regions, min_pixels=1)
    assert len(images) == len(regions)
    for (value, box), crop, mask in zip(regions, images, masks):
        assert crop.shape == mask.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert mask.sum() == (labels == value).sum()  # the whole object, and only it
        ys, xs = np.nonzero(mask)
        extent = max(box[1].stop - box[1].start, box[2].stop - box[2].start)
        pad = max(8, int(np.ceil(0.6 * extent)))
        y0 = max(0, box[1].start - pad)
        x0 = max(0, box[2].start - pad)
        assert np.array_equal(crop, image[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]])


def test_bad_regions_and_tiny_objects_are_refused():
    image, labels = object_scene((64, 64), seed=3)
    with pytest.raises(ValueError, match=r"shape \(64, 60\).*same pixels"):
        annotation_examples(image[:, :60], labels, _regions(labels))
    with pytest.raises(ValueError, match="must index the labels"):
        annotation_examples(image, labels, [(1, (slice(0, 5),))])
    with pytest.raises(ValueError, match="None of the 1 annotated object"):
        annotation_examples(image, labels, [(1, (slice(0, 5), slice(0, 5)))], min_pixels=10 ** 6)


def test_fine_tuning_changes_a_copy_and_reports_held_out_iou():
    model = pretrained.load("dextr_light.objects2d")
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    image, labels = object_scene((128, 128), seed=int(np.random.default_rng().integers(1 << 20)), count=(5, 8))
    events = []
    tuned = fine_tune_on_annotations(model, image, labels, _regions(labels), steps=3, batch_size=4,
                                     progress=events.append)
    assert tuned is not model and tuned.task == "interactive"
    assert all(torch.equal(before[k], v) for k, v in model.network.state_dict().items())  # the original kept
    assert any(not torch.equal(before[k], v) for k, v in tuned.network.state_dict().items())
    assert 0 <= tuned.validation["object_iou"] <= 1 and tuned.validation["held_out_objects"] >= 1
    assert events and events[-1].kind == "done"
