"""segarch.instances: targets from instance labels, decoders back to objects, object matching scores."""

from __future__ import annotations

import numpy as np
import pytest

from segarch.instances import (BoundaryDecoder, DistanceDecoder, boundary_classes, distance_classes, edge_distance,
                               get_decoder, match, match_many, normalized_distance, seeded_watershed)
from segarch.synthetic import nuclei_sample


def _one_hot(classes: np.ndarray, channels: int) -> np.ndarray:
    return np.moveaxis(np.eye(channels, dtype=np.float32)[classes], -1, 0)


def _same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a renumbering: one-to-one correspondence of labels, pixel for pixel."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


def test_edge_distance_is_physical_and_per_object():
    labels = np.zeros((9, 12), np.uint16)
    labels[1:8, 1:6] = 1
    labels[1:8, 6:11] = 2  # touches object 1 along a column
    d = edge_distance(labels)
    assert d[0, 0] == 0 and d[4, 5] == 1 and d[4, 6] == 1  # the shared edge is an edge for both
    assert d[4, 3] == 3 and d[4, 8] == 3
    # Rows 3x as far apart as columns: a distance along Y costs three.
    d3 = edge_distance(labels, spacing=(3.0, 1.0))
    assert d3[1, 3] == 3 and d3[4, 3] == 3
    n = normalized_distance(labels)
    assert n.max() == pytest.approx(1.0) and n[4, 3] == pytest.approx(1.0) and n[4, 5] == pytest.approx(1 / 3)
    full = np.ones((5, 5), np.uint8)  # no edge but the image border: measured from the border
    assert np.isfinite(edge_distance(full)).all() and edge_distance(full)[2, 2] == 3


def test_class_targets_mark_boundaries_between_touching_objects_in_2d_and_3d():
    for shape in [(96, 96), (16, 64, 64)]:
        s = nuclei_sample(shape, seed=2, hard=True)
        boundary = boundary_classes(s.labels, s.spacing)
        assert set(np.unique(boundary)) == {0, 1, 2}
        assert np.array_equal(boundary > 0, s.labels > 0)
        # Wherever two objects touch, both sides are boundary: interiors never touch another object.
        for axis in range(s.labels.ndim):
            a, b = np.moveaxis(s.labels, axis, 0), np.moveaxis(boundary, axis, 0)
            contact = (a[:-1] != a[1:]) & (a[:-1] > 0) & (a[1:] > 0)
            assert contact.any() and (b[:-1][contact] == 2).all() and (b[1:][contact] == 2).all()
        distance = distance_classes(s.labels, s.spacing, bins=4)
        assert np.array_equal(distance > 0, s.labels > 0) and distance.max() == 4
        # Every object reaches the top bin (its centre); where objects touch, both sides are bin 1.
        from scipy import ndimage
        ids = np.arange(1, s.labels.max() + 1)
        assert (ndimage.maximum(distance, s.labels, ids) == 4).all()
        for axis in range(s.labels.ndim):
            a, d = np.moveaxis(s.labels, axis, 0), np.moveaxis(distance, axis, 0)
            contact = (a[:-1] != a[1:]) & (a[:-1] > 0) & (a[1:] > 0)
            assert (d[:-1][contact] == 1).all() and (d[1:][contact] == 1).all()


@pytest.mark.parametrize("shape, seed", [((128, 128), 11), ((20, 64, 64), 1)])
@pytest.mark.parametrize("decoder", [DistanceDecoder(), DistanceDecoder(seed_h=0.03), BoundaryDecoder()])
def test_decoders_recover_touching_objects_from_perfect_outputs(shape, seed, decoder):
    s = nuclei_sample(shape, seed=seed, hard=True)
    probabilities = _one_hot(decoder.targets(s.labels, s.spacing), decoder.channels)
    labels = decoder.decode(probabilities)
    assert labels.dtype == np.uint32 and labels.shape == shape
    ids = np.unique(labels)
    assert np.array_equal(ids, np.arange(ids.size))  # 0 and 1..N, none skipped
    scores = match(s.labels, labels)
    assert scores.f1(0.5) > 0.95 and scores.mean_ap > 0.85, scores.summary()
    # Merely thresholding the foreground merges the touching objects: what the decoder is for.
    from scipy import ndimage
    components, _ = ndimage.label(s.labels > 0)
    assert match(s.labels, components).f1(0.5) < scores.f1(0.5) - 0.1


@pytest.mark.parametrize("shape", [(40, 56), (9, 40, 56)])
def test_peak_seeds_split_two_nuclei_whose_seed_regions_meet_through_a_ridge(shape):
    # Two round objects side by side whose expected distance stays above the seed threshold between them
    # (a blurred, small pair): one seed region, so one object by default; seed_h gives each peak its seed.
    rng = np.random.default_rng()
    grid = np.indices(shape, dtype=np.float32)
    middle = [n / 2 for n in shape]
    gap = rng.uniform(6.0, 8.0)
    cones = []
    for side in (-1, 1):
        centre = list(middle)
        centre[-1] += side * gap
        cones.append(np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / (2 * 6.0 ** 2)))
    height = np.maximum(*cones)
    expected = 0.25 + 0.5 * height          # 2 bins: class centres 0.25 and 0.75
    inside = height > 0.1
    probabilities = np.stack([~inside, inside * (0.75 - expected) / 0.5, inside * (expected - 0.25) / 0.5])
    probabilities = probabilities.astype(np.float32)
    merged = DistanceDecoder(bins=2, seed_threshold=0.4).decode(probabilities)
    split = DistanceDecoder(bins=2, seed_threshold=0.4, seed_h=0.05).decode(probabilities)
    left, right = [tuple(int(round(c + side * gap)) if i == len(shape) - 1 else int(c) for i, c in enumerate(middle))
                   for side in (-1, 1)]
    assert merged.max() == 1 and merged[left] == merged[right] == 1
    assert split.max() == 2 and split[left] != split[right] and {split[left], split[right]} == {1, 2}
    assert np.array_equal(split > 0, inside)  # the same foreground, cut between the two peaks
    with pytest.raises(ValueError, match="`seed_h` must be a number in"):
        DistanceDecoder(seed_h=1.0)


def test_seeded_watershed_keeps_unseeded_objects_and_drops_small_ones():
    foreground = np.zeros((20, 20), bool)
    foreground[2:8, 2:8] = True      # seeded
    foreground[12:18, 12:18] = True  # no seed: still an object
    foreground[0, 19] = True         # one pixel: dropped with min_size=2
    seeds = np.zeros_like(foreground)
    seeds[4, 4] = True
    labels = seeded_watershed(foreground, np.zeros((20, 20)), seeds, min_size=2)
    assert set(np.unique(labels)) == {0, 1, 2} and labels[4, 4] == 1 and labels[15, 15] == 2 and labels[0, 19] == 0


def test_decoders_by_name_with_options_and_clear_errors():
    assert get_decoder("boundary").channels == 3
    d = get_decoder("distance", bins=6, seed_threshold=0.6)
    assert d.channels == 7 and len(d.class_names) == 7 and d.seed_threshold == 0.6
    assert get_decoder(d.settings()) == d
    with pytest.raises(ValueError, match="`decoder` must be one of"):
        get_decoder("stardist")
    with pytest.raises(ValueError, match="unknown option"):
        get_decoder("boundary", bins=4)
    with pytest.raises(ValueError, match="`seed_threshold` must be a number in"):
        DistanceDecoder(seed_threshold=1.5)
    with pytest.raises(ValueError, match=r"\(5, Y, X\)"):
        DistanceDecoder().decode(np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="labels >= 0"):
        boundary_classes(np.array([[0, -1], [1, 2]]))
    with pytest.raises(ValueError, match="integer labels"):
        distance_classes(np.array([[0, 0.5], [1, 2]]))
    with pytest.raises(ValueError, match="`spacing` must be 3 positive"):
        edge_distance(np.zeros((4, 4, 4), np.uint8), spacing=(0, 1, 1))


def test_match_counts_and_scores():
    truth = np.zeros((20, 40), np.uint16)
    truth[2:8, 2:8] = 1      # found exactly
    truth[2:8, 12:18] = 2    # found with IoU 30/48 (0.625)
    truth[12:18, 2:8] = 3    # missed
    pred = np.zeros_like(truth)
    pred[2:8, 2:8] = 7
    pred[2:8, 13:20] = 5
    pred[12:18, 30:36] = 9   # a false positive
    m = match(truth, pred)
    assert (m.n_true, m.n_pred) == (3, 3)
    assert (m.tp[0], m.fp[0], m.fn[0]) == (2, 1, 1)
    assert m.f1(0.5) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1)) and m.ap(0.5) == pytest.approx(2 / 4)
    assert m.ap(0.75) == pytest.approx(1 / 5)  # only the exact one matches above 0.625
    assert m.mean_ap == pytest.approx((3 * 0.5 + 6 * 0.2) / 9)  # thresholds 0.5..0.6 vs 0.65..0.9
    low = match(truth, pred, thresholds=(0.1,))
    assert low.tp[0] == 2
    assert match(truth, truth).summary()["f1@0.5"] == 1.0
    pooled = match_many([truth, truth], [pred, truth])
    assert (pooled.tp[0], pooled.fp[0], pooled.fn[0]) == (5, 1, 1)
    empty = np.zeros_like(truth)
    assert match(empty, empty).f1(0.5) == 1.0 and match(truth, empty).f1(0.5) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        match(truth, pred[:10])


def test_match_agrees_with_a_brute_force_count_on_random_objects():
    rng = np.random.default_rng(0)
    truth = nuclei_sample((96, 96), seed=21, hard=True).labels
    # A prediction: every object shifted by a random offset, some dropped, a few spurious.
    pred = np.zeros_like(truth)
    for i in range(1, truth.max() + 1):
        if rng.random() < 0.15:
            continue
        ys, xs = np.nonzero(truth == i)
        dy, dx = rng.integers(-2, 3, size=2)
        pred[np.clip(ys + dy, 0, 95), np.clip(xs + dx, 0, 95)] = i + 100
    m = match(truth, pred, thresholds=(0.5, 0.7))
    for k, t in enumerate((0.5, 0.7)):
        tp = 0
        for i in range(1, truth.max() + 1):
            a = truth == i
            for j in np.unique(pred[a]):
                if j and (a & (pred == j)).sum() / (a | (pred == j)).sum() > t:
                    tp += 1
        assert m.tp[k] == tp


def test_measure_objects_whole_and_chunk_by_chunk(tmp_path):
    import csv

    import zarr

    from segarch.instances.measure import measure, table_summary, write_table

    s = nuclei_sample((24, 70, 66), seed=12, hard=True)
    labels, image = s.labels, s.image
    classes = (labels % 3 == 0).astype(np.uint8) + 1  # a class map: class 2 for every third object
    table = measure(labels, image, classes=classes, spacing=s.spacing)
    ids = np.unique(labels)[1:]
    assert np.array_equal(table["label"], ids)
    for k in (0, len(ids) // 2, len(ids) - 1):
        mask = labels == ids[k]
        coords = np.argwhere(mask)
        assert table["volume_voxels"][k] == mask.sum()
        assert table["volume"][k] == pytest.approx(mask.sum() * np.prod(s.spacing))
        assert [table[f"centroid_{a}"][k] for a in "zyx"] == pytest.approx(coords.mean(0).tolist())
        assert [table[f"bbox_min_{a}"][k] for a in "zyx"] == coords.min(0).tolist()
        assert [table[f"bbox_max_{a}"][k] for a in "zyx"] == (coords.max(0) + 1).tolist()
        assert table["mean_intensity"][k] == pytest.approx(image[mask].mean(), rel=1e-5)
        assert table["class"][k] == (2 if ids[k] % 3 == 0 else 1)
    # A Zarr label image read chunk by chunk: objects cut by chunks are measured whole.
    store = zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=labels.shape, chunks=(7, 16, 16),
                            dtype=labels.dtype)
    store[:] = labels
    chunked = measure(store, image, classes=classes, spacing=s.spacing)
    assert set(chunked) == set(table)
    for column in table:
        assert np.allclose(chunked[column], table[column]), column
    summary = table_summary(table)
    assert summary["objects"] == len(ids) and summary["median_size_pixels"] == np.median(table["volume_voxels"])
    path = write_table(table, tmp_path / "objects.csv")
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == len(ids) and int(rows[0]["label"]) == ids[0] and "mean_intensity" in rows[0]
    flat = measure(labels[5], image[5], classes={int(i): "nucleus" for i in ids})
    assert {"area_pixels", "area", "centroid_y", "bbox_max_x"} <= set(flat) and set(flat["class"]) == {"nucleus"}
    multi = measure(labels[5], np.stack([image[5], 2 * image[5]]))
    assert np.allclose(multi["mean_intensity_c1"], 2 * multi["mean_intensity_c0"])
    with pytest.raises(ValueError, match="`image` must have the labels' shape"):
        measure(labels, image[:, :10])
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        write_table(table, tmp_path / "objects.xlsx")


def test_chunked_measurement_joins_a_label_in_separate_places_and_csv_is_written_in_slices(tmp_path, monkeypatch):
    """Objects whole in a chunk are kept as measured; a label also found elsewhere (another chunk, not touching)
    is still one row; a CSV longer than one slice of rows holds every row once."""
    import csv
    import sys

    import zarr

    from segarch.instances.measure import measure, write_table

    rng = np.random.default_rng()
    labels = np.zeros((64, 64), np.int32)
    for k in range(1, 40):  # small squares, most inside one 16² chunk
        y, x = rng.integers(0, 60, 2)
        labels[y:y + 4, x:x + 4] = k
    labels[1:3, 1:3] = labels[60:62, 60:62] = 99  # one label in two far-apart places, each whole in its chunk
    image = rng.random(labels.shape).astype(np.float32)
    store = zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=labels.shape, chunks=(16, 16),
                            dtype=labels.dtype)
    store[:] = labels
    whole, chunked = measure(labels, image), measure(store, image)
    assert np.array_equal(whole["label"], np.unique(labels)[1:]) and 99 in whole["label"]
    for column in whole:
        assert np.allclose(chunked[column], whole[column]), column
    row = list(whole["label"]).index(99)
    assert whole["area_pixels"][row] == 8 and whole["bbox_max_y"][row] == 62
    monkeypatch.setattr(sys.modules["segarch.instances.measure"], "_CSV_ROWS", 7)
    rows = list(csv.DictReader(open(write_table(whole, tmp_path / "objects.csv"))))
    assert [int(r["label"]) for r in rows] == whole["label"].tolist()
    assert [float(r["mean_intensity"]) for r in rows] == pytest.approx(whole["mean_intensity"].tolist())


def test_parquet_tables_need_pyarrow_and_say_so(tmp_path):
    from segarch.instances.measure import measure, write_table

    table = measure(np.array([[0, 1], [2, 2]], np.uint8))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs pyarrow"):
            write_table(table, tmp_path / "t.parquet")
        assert not list(tmp_path.iterdir())
    else:
        import pyarrow.parquet as pq

        assert pq.read_table(write_table(table, tmp_path / "t.parquet")).num_rows == 2
