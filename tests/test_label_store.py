"""LabelStore: objects painted into a chunked Zarr store on disk, undo, the next id kept in its attributes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zarr

from segarch.prompts import extreme_points, segment_from_points
from segarch.prompts.evaluate import iou
from segarch.prompts.label_store import NEXT_LABEL_ATTRIBUTE, LabelStore
from tests.lazy_objects import box_of, disc_centres, disc_mask, lazy_disc_image


def _random_masks(rng, n, shape):
    out = []
    for _ in range(n):
        size = rng.integers(5, 30, 2)
        start = [int(rng.integers(0, s - z)) for s, z in zip(shape, size)]
        out.append((rng.random(tuple(size)) < 0.6, start))
    return out


def test_paint_and_undo_match_a_numpy_reference(tmp_path):
    rng = np.random.default_rng()
    shape = (300, 260)
    store = LabelStore.create(tmp_path / "labels.zarr", shape, chunks=(64, 64))
    reference = np.zeros(shape, np.uint32)
    for n, (mask, start) in enumerate(_random_masks(rng, 12, shape), start=1):
        box = tuple(slice(s, s + z) for s, z in zip(start, mask.shape))
        free = mask & (reference[box] == 0)
        label = store.paint(mask, start)
        assert label == (n if free.any() else 0) or free.any()
        reference[box][free] = label
        if not free.any():
            break
    assert np.array_equal(store.array[:], reference)
    labels_now = store.next_label
    assert labels_now == int(reference.max()) + 1
    # Undo twice: the pixels come back, the newest ids are free again, on disk too.
    last = store.history[-1].label
    store.undo()
    store.undo()
    assert store.next_label == last - 1
    reopened = zarr.open_array(str(tmp_path / "labels.zarr"))
    assert int(reopened.attrs[NEXT_LABEL_ATTRIBUTE]) == last - 1
    expected = np.where(reference >= last - 1, 0, reference)
    assert np.array_equal(reopened[:], expected)


def test_overwrite_and_continuing_an_id(tmp_path):
    store = LabelStore.create(tmp_path / "l.zarr", (50, 50))
    a = np.ones((10, 10), bool)
    assert store.paint(a, (0, 0)) == 1
    assert store.paint(a, (5, 5)) == 2  # only the free pixels
    assert int((store.array[:] == 2).sum()) == 100 - 25
    assert store.paint(a, (5, 5), overwrite=True) == 3
    assert int((store.array[:] == 3).sum()) == 100 and int((store.array[:] == 1).sum()) == 75
    assert not (store.array[:] == 2).any()
    assert store.paint(a, (0, 0)) == 0  # all labelled already: nothing painted, id not used
    assert store.next_label == 4
    store.undo()  # the overwrite: both objects come back whole
    assert int((store.array[:] == 1).sum()) == 100 and int((store.array[:] == 2).sum()) == 75
    assert store.next_label == 3
    # Another slice of a stack continues the same id.
    stack = LabelStore.create(tmp_path / "s.zarr", (4, 30, 30))
    first = stack.paint(np.ones((5, 5), bool), (1, 3, 3))
    assert stack.paint(np.ones((5, 5), bool), (2, 3, 3), label=first) == first
    assert set(np.unique(stack.array[:])) == {0, first} and int((stack.array[:] > 0).sum()) == 50
    assert stack.next_label == first + 1
    stack.undo()  # the continued slice only: the id stays in use
    assert stack.next_label == first + 1 and int((stack.array[:] > 0).sum()) == 25


def test_next_label_survives_reopening_without_a_scan(tmp_path, monkeypatch):
    store = LabelStore.create(tmp_path / "l.zarr", (40, 40))
    store.paint(np.ones((3, 3), bool), (1, 1))
    store.paint(np.ones((3, 3), bool), (10, 10))
    monkeypatch.setattr(LabelStore, "_scan_max", lambda self: pytest.fail("the store was scanned"))
    again = LabelStore.open(tmp_path / "l.zarr", shape=(40, 40))
    assert again.next_label == 3
    assert again.paint(np.ones((2, 2), bool), (30, 30)) == 3


def test_store_without_the_attribute_is_scanned_once(tmp_path):
    array = zarr.create_array(store=str(tmp_path / "old.zarr"), shape=(70, 70), chunks=(16, 16), dtype="uint16")
    array[60, 61] = 41
    store = LabelStore.open(tmp_path / "old.zarr", shape=(70, 70))
    assert store.next_label == 42
    assert int(zarr.open_array(str(tmp_path / "old.zarr")).attrs[NEXT_LABEL_ATTRIBUTE]) == 42


@pytest.mark.parametrize("shape, dtype, message", [
    ((100, 90), None, r"shape \(100, 90\), the image \(100, 100\)"),
    ((100, 100), "uint16", "dtype uint32, expected uint16"),
])
def test_a_store_that_does_not_fit_the_image_is_refused_untouched(tmp_path, shape, dtype, message):
    path = tmp_path / "l.zarr"
    LabelStore.create(path, shape)
    before = sorted(p.name for p in path.rglob("*"))
    with pytest.raises(ValueError, match=message):
        LabelStore.open(path, shape=(100, 100), dtype=dtype)
    assert sorted(p.name for p in path.rglob("*")) == before


def test_float_store_and_bad_offsets_are_refused(tmp_path):
    zarr.create_array(store=str(tmp_path / "f.zarr"), shape=(20, 20), chunks=(8, 8), dtype="float32")
    with pytest.raises(ValueError, match="integer label ids.*float32"):
        LabelStore.open(tmp_path / "f.zarr", shape=(20, 20))
    with pytest.raises(ValueError, match="exists"):
        LabelStore.create(tmp_path / "f.zarr", (20, 20))
    store = LabelStore.create(tmp_path / "l.zarr", (20, 20))
    with pytest.raises(ValueError, match=r"runs outside the store \(20, 20\)"):
        store.paint(np.ones((5, 5), bool), (18, 0))
    assert store.next_label == 1 and not store.array[:].any()


def test_20000_squared_lazy_image_20_objects_in_bounded_memory(tmp_path):
    """20 objects segmented from a 20000² lazy image (1.6 GB as float32) into a Zarr store on disk: memory
    stays a few MB, only the chunks under the objects are written, and the store holds each object."""
    from segarch import pretrained

    shape = (20000, 20000)
    discs = disc_centres(shape, 20, seed=int(np.random.default_rng().integers(1 << 30)))
    image = lazy_disc_image(shape, discs)
    model = pretrained.load("dextr_light.objects2d")
    store = LabelStore.create(tmp_path / "labels.zarr", shape)
    segment_from_points(model, image[:200, :200], [[10, 10], [10, 100], [5, 50], [100, 50]])  # warm-up
    tracemalloc.start()
    ious = []
    for n, disc in enumerate(discs, start=1):
        start, size = box_of(disc, pad=6)
        truth = disc_mask(disc, start, size)
        points = extreme_points(truth) + np.asarray(start)
        crop, offset = segment_from_points(model, image, points, return_crop=True)
        assert store.paint(crop, offset) == n
        window = np.asarray(store.array[tuple(slice(s, s + z) for s, z in zip(start, size))])
        ious.append(iou(window == n, truth))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB for a {image.nbytes / 2 ** 30:.1f} GiB image"
    assert np.mean(ious) > 0.85 and min(ious) > 0.6, ious
    reopened = zarr.open_array(str(tmp_path / "labels.zarr"))
    assert int(reopened.attrs[NEXT_LABEL_ATTRIBUTE]) == 21
    # Only chunks under objects exist on disk (empty chunks are never written): at least the chunks holding the
    # discs' centres, at most those their padded boxes touch (two discs may share a chunk: a draw gave 19 for 20)
    chunk = reopened.chunks
    centres = {(y // chunk[0], x // chunk[1]) for y, x, _ in discs}
    touched = set()
    for disc in discs:
        (y0, x0), (h, w) = box_of(disc, pad=6)  # the box the object was segmented in
        touched |= {(i, j) for i in range(y0 // chunk[0], (y0 + h - 1) // chunk[0] + 1)
                    for j in range(x0 // chunk[1], (x0 + w - 1) // chunk[1] + 1)}
    assert len(centres) <= reopened.nchunks_initialized <= len(touched)
