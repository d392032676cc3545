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


def _downsampled(level0: np.ndarray, k: int, shape) -> np.ndarray:
    """Level ``k`` of a nearest labels pyramid: every 2**k-th pixel of level 0 along Y and X."""
    f = 2 ** k
    return level0[..., ::f, ::f][tuple(slice(0, n) for n in shape)]


@pytest.mark.parametrize("shape", [(1100, 777), (3, 530, 600)])
def test_multiscale_store_keeps_every_level_equal_to_level_0(tmp_path, shape):
    """Paint (with and without overwrite; in a stack 2D and 3D masks), undo: after each step every level is level 0
    taken every 2**k-th pixel, on disk, and the store reopens as the same pyramid."""
    rng = np.random.default_rng()
    store = LabelStore.create(tmp_path / "l.zarr", shape, chunks=(1,) * (len(shape) - 2) + (128, 128),
                              multiscale=True)
    assert store.multiscale and [lv.shape[-2:] for lv in store.levels][:3] == [
        shape[-2:], tuple(n // 2 for n in shape[-2:]), tuple(n // 4 for n in shape[-2:])]
    assert max(store.levels[-1].shape[-2:]) <= 256
    reference = np.zeros(shape, np.uint32)

    def check():
        assert np.array_equal(store.levels[0][:], reference)
        for k, level in enumerate(store.levels[1:], start=1):
            assert np.array_equal(level[:], _downsampled(reference, k, level.shape)), f"level {k}"

    lead = len(shape) - 2
    for n in range(14):
        # a stack: a 2D mask on one slice, or every other time a 3D one over slices
        axes = len(shape) if lead and n % 2 else 2
        size = [int(rng.integers(1, s + 1)) for s in shape[:axes - 2]] + list(rng.integers(1, 90, 2))
        fixed = len(shape) - axes
        start = [int(rng.integers(0, s)) for s in shape[:fixed]] + [int(rng.integers(0, s - z + 1))
                                                                    for s, z in zip(shape[fixed:], size)]
        mask = rng.random(tuple(size)) < 0.6
        overwrite = bool(n % 3 == 2)
        before = reference.copy()
        label = store.paint(mask, start, overwrite=overwrite)
        box = tuple(start[:fixed]) + tuple(slice(s, s + z) for s, z in zip(start[fixed:], size))
        region = reference[box]
        region[mask if overwrite else mask & (before[box] == 0)] = label
        check()
    for _ in range(5):
        edit = store.undo()
        reference[edit.coords] = edit.before
        check()
    again = LabelStore.open(tmp_path / "l.zarr", shape=shape, dtype="uint32")
    assert again.multiscale and len(again.levels) == len(store.levels) and again.next_label == store.next_label
    # OME-Zarr: listed as a nearest labels pyramid with the levels' scales
    ome = zarr.open_group(str(tmp_path / "l.zarr")).attrs["ome"]
    datasets = ome["multiscales"][0]["datasets"]
    assert ome["multiscales"][0]["type"] == "nearest" and "image-label" in ome
    assert datasets[1]["coordinateTransformations"][0]["scale"][-2:] == [2.0, 2.0]


def test_multiscale_store_of_another_shape_or_dtype_or_broken_levels_is_refused_untouched(tmp_path):
    path = tmp_path / "l.zarr"
    LabelStore.create(path, (900, 700), multiscale=True, dtype="uint16")
    before = {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"shape \(900, 700\), the image \(900, 800\)"):
        LabelStore.open(path, shape=(900, 800))
    with pytest.raises(ValueError, match="dtype uint16, expected uint32"):
        LabelStore.open(path, shape=(900, 700), dtype="uint32")
    group = zarr.open_group(str(path))
    wrong = [group["0"], group["1"], zarr.create_array(store=str(tmp_path / "x.zarr"), shape=(300, 175),
                                                        dtype="uint16")]
    with pytest.raises(ValueError, match=r"level 2 has shape \(300, 175\), expected \(225, 175\)"):
        LabelStore(wrong)
    assert {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array("a", shape=(4, 4), dtype="uint8")
    with pytest.raises(ValueError, match="not a multiscale labels image"):
        LabelStore.open(tmp_path / "plain.zarr")


def test_multiscale_store_of_five_axes_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"`shape` of 2 to 4 axes .*\(2, 2, 3, 300, 300\)"):
        LabelStore.create(tmp_path / "l.zarr", (2, 2, 3, 300, 300), multiscale=True)
    assert not (tmp_path / "l.zarr").exists()
