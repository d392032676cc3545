"""segarch.instances.decode_blocks: block-wise decoding equals whole-image decoding; seams never cut objects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segarch.instances import BoundaryDecoder, DistanceDecoder, match
from segarch.instances.blocks import DecodingCancelled, decode_blocks
from segarch.synthetic import nuclei_sample

ROOT = Path(__file__).resolve().parents[1]


def probabilities_for(labels: np.ndarray, decoder, spacing=None, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """A network-like output for ``labels``: the decoder's targets, one-hot, smoothed and a little noisy."""
    classes = decoder.targets(labels, spacing)
    p = np.moveaxis(np.eye(decoder.channels, dtype=np.float32)[classes], -1, 0)
    rng = np.random.default_rng(seed)
    p = np.stack([ndimage.gaussian_filter(c, sigma) for c in p]) + rng.uniform(0, 0.05, p.shape).astype(np.float32)
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a renumbering: the same pixels, in one-to-one corresponding objects."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


@pytest.mark.slow
@pytest.mark.parametrize("decoder", [DistanceDecoder(), BoundaryDecoder()], ids=["distance", "boundary"])
@pytest.mark.parametrize("shape, block, halo, seed", [
    ((301, 277), 64, 32, 3),                          # 2D, odd sizes, 5 x 5 blocks with a ragged last row
    ((37, 101, 95), (16, 40, 40), (12, 24, 24), 3),   # 3D, odd sizes, anisotropic voxels
])
def test_blocks_equal_the_whole_image_when_objects_are_smaller_than_the_halo(decoder, shape, block, halo, seed):
    s = nuclei_sample(shape, seed=seed, hard=True)
    probabilities = probabilities_for(s.labels, decoder, s.spacing, seed=seed)
    whole = decoder.decode(probabilities)
    assert whole.max() > 100 and match(s.labels, whole).f1(0.5) > 0.8  # a crowded, realistic case
    result = decode_blocks(probabilities, decoder, block=block, halo=halo, spacing=s.spacing)
    assert result.labels.dtype == np.uint32
    assert same_objects(whole, result.labels)
    assert np.array_equal(whole, result.labels)  # both number objects in raster order of their first pixel
    report = result.report
    assert report["objects"] == whole.max() and report["joined_fragments"] == 0
    assert report["merged_across_seams"] > 10  # many objects did cross seams
    # Objects on the image border, counted directly.
    faces = [np.take(whole, i, axis=a) for a in range(whole.ndim) for i in (0, -1)]
    assert report["touching_border"] == np.unique(np.concatenate([f.ravel() for f in faces]))[1:].size


def _objects_on_seams(shape, block, radius, spacing=None) -> np.ndarray:
    """Separate balls centred where blocks meet: on corners (4 blocks in 2D, 8 in 3D) and on seams between two."""
    spacing = np.ones(len(shape)) if spacing is None else np.asarray(spacing, float)
    counts = [max(1, -(-n // b) - 1) for n, b in zip(shape, block)]
    corners = [np.array([b * (i + 1) for b, i in zip(block, idx)], float) for idx in np.ndindex(*counts)]
    # On the seam across axis a, halfway along the block in the other axes.
    seams = [np.array([b * (i + 1) if k == a else b * (i + 0.5) for k, (b, i) in enumerate(zip(block, idx))], float)
             for a in range(len(shape)) for idx in np.ndindex(*counts)]
    centres: list[np.ndarray] = []
    for c in corners[:1] + seams + corners[1:]:  # balls that keep clear of the others
        inside_image = all(radius / v + 1 < p < n - radius / v - 1 for p, n, v in zip(c, shape, spacing))
        if inside_image and all(np.linalg.norm((c - o) * spacing) > 2 * radius + 3 for o in centres):
            centres.append(c)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    labels = np.zeros(shape, np.uint16)
    for i, centre in enumerate(centres, 1):
        labels[(((grid - centre) * spacing) ** 2).sum(-1) <= radius ** 2] = i
    return labels


@pytest.mark.slow
@pytest.mark.parametrize("decoder", [DistanceDecoder(), BoundaryDecoder()], ids=["distance", "boundary"])
@pytest.mark.parametrize("shape, block, halo, radius, spacing", [
    ((97, 101), (32, 32), 16, 7.0, None),           # smaller than the halo: seen whole by every block
    ((97, 101), (32, 32), 4, 12.0, None),           # larger than the halo: joined from fragments
    ((45, 67, 67), (15, 22, 22), 8, 6.0, (2.0, 1.0, 1.0)),   # 3D: where 8 blocks meet
    ((45, 67, 67), (15, 22, 22), 3, 9.0, None),
])
def test_objects_across_seams_and_corners_come_out_whole(decoder, shape, block, halo, radius, spacing):
    truth = _objects_on_seams(shape, block, radius, spacing)
    assert truth.max() >= 3 and ndimage.label(truth > 0)[1] == truth.max()  # apart from one another
    corner = tuple(int(b) for b in block)
    assert truth[corner] > 0  # one ball sits where 4 (2D) or 8 (3D) blocks meet
    probabilities = probabilities_for(truth, decoder, spacing, sigma=0.7)
    result = decode_blocks(probabilities, decoder, block=block, halo=halo)
    labels = result.labels
    m = match(truth, labels)
    assert m.n_pred == m.n_true and m.f1(0.5) == 1.0, m.summary()  # one object each, no duplicate
    for i in range(1, truth.max() + 1):
        ids, counts = np.unique(labels[truth == i], return_counts=True)
        found = ids[ids > 0]
        assert found.size == 1 and counts[ids > 0][0] > 0.9 * (truth == i).sum()  # not cut: one id covers it
        assert ndimage.label(labels == found[0])[1] == 1
    assert result.report["merged_across_seams"] == truth.max()
    if halo < radius:
        assert result.report["joined_fragments"] >= 1


def test_zarr_output_resumes_after_cancel_and_holds_the_seam_report(tmp_path):
    import zarr

    decoder = DistanceDecoder()
    s = nuclei_sample((160, 150), seed=8, hard=True)
    probabilities = probabilities_for(s.labels, decoder)
    source = zarr.open_array(str(tmp_path / "probs.zarr"), mode="w", shape=probabilities.shape,
                             chunks=(decoder.channels, 40, 40), dtype=np.float32)
    source[:] = probabilities
    expected = decoder.decode(probabilities)
    cancel = threading.Event()
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if done == 5:
            cancel.set()

    out = tmp_path / "labels.zarr"
    with pytest.raises(DecodingCancelled):
        decode_blocks(source, decoder, out, block=32, halo=16, progress=progress, cancel=cancel)
    assert calls[-1] == (5, 50)
    with pytest.raises(ValueError, match="already exists"):
        decode_blocks(source, decoder, out, block=32, halo=16)
    with pytest.raises(ValueError, match="other settings"):
        decode_blocks(source, decoder, out, block=32, halo=8, resume=True)
    result = decode_blocks(source, decoder, out, block=32, halo=16, resume=True)
    assert np.array_equal(np.asarray(result.labels), expected)
    group = zarr.open_group(str(out), mode="r")
    assert list(group.array_keys()) == ["0"]  # scratch ids removed once done
    assert group["0"].attrs["complete"] is True and group["0"].chunks == (32, 32)
    report = group.attrs["segarch"]["instances"]
    assert report["objects"] == expected.max() and report["merged_across_seams"] > 0
    axes = group.attrs["ome"]["multiscales"][0]["axes"]
    assert axes == [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    again = decode_blocks(source, decoder, out, block=32, halo=16, resume=True)  # already complete: nothing to do
    assert again.report == report
    foreign = tmp_path / "my_data"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a segarch result")
    with pytest.raises(ValueError, match="not a segarch result"):
        decode_blocks(source, decoder, foreign, block=32, halo=16, overwrite=True)
    assert (foreign / "notes.txt").exists()
    with pytest.raises(ValueError, match="is the input"):
        decode_blocks(source, decoder, tmp_path / "probs.zarr", overwrite=True)
    replaced = decode_blocks(source, decoder, out, block=48, halo=16, overwrite=True)  # our own store: replaced
    assert np.array_equal(np.asarray(replaced.labels), expected)


def test_a_zarr_output_shows_each_block_as_soon_as_it_is_decoded(tmp_path):
    """A viewer's live layer reads ``<out>/0`` during the run: decoded blocks are there (provisional ids, the
    same objects as the final ones within the block), blocks not decoded yet are 0, and step 3 renames them."""
    import zarr

    decoder = DistanceDecoder()
    rng = np.random.default_rng()
    s = nuclei_sample((160, 150), seed=int(rng.integers(1000)), hard=True)
    probabilities = probabilities_for(s.labels, decoder)
    expected = decoder.decode(probabilities)
    out = tmp_path / "labels.zarr"
    seen = {}

    def progress(done, total):
        if done in (3, 12):  # step 1 (25 blocks, 5 x 5) is under way
            seen[done] = zarr.open_array(str(out / "0"), mode="r")[:]

    result = decode_blocks(probabilities, decoder, out, block=32, halo=16, progress=progress)
    assert np.array_equal(np.asarray(result.labels), expected)
    for done, view in seen.items():
        decoded = np.zeros(view.shape, bool)
        for k in range(done):
            decoded[32 * (k // 5):32 * (k // 5 + 1), 32 * (k % 5):32 * (k % 5 + 1)] = True
        assert not view[~decoded].any()  # not decoded yet: empty
        assert view[decoded].any()
        ids = []
        for k in range(done):
            core = (slice(32 * (k // 5), 32 * (k // 5 + 1)), slice(32 * (k % 5), 32 * (k % 5 + 1)))
            assert same_objects(view[core], expected[core])  # the block's objects, before their final ids
            ids.append(set(np.unique(view[core])) - {0})
            assert bool(ids[-1]) == bool(expected[core].any())
        # Blocks differ in colour. (A fixed "at least 2 of the first 3 blocks hold objects" failed once in CI on a
        # sparse draw: which blocks hold objects is now checked against the expected labels above.)
        assert sum(map(len, ids)) == len(set().union(*ids))


@pytest.mark.slow
def test_a_killed_decoding_resumes_to_the_same_labels(tmp_path):
    decoder = BoundaryDecoder()
    s = nuclei_sample((400, 410), seed=9, hard=True)
    probabilities = probabilities_for(s.labels, decoder)
    np.save(tmp_path / "probs.npy", probabilities)
    out = tmp_path / "labels.zarr"
    script = textwrap.dedent(f"""
        import numpy as np
        from segarch.instances.blocks import decode_blocks
        p = np.load({str(tmp_path / 'probs.npy')!r}, mmap_mode="r")
        decode_blocks(p, "boundary", {str(out)!r}, block=16, halo=12, resume=True)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    records = out / ".segarch-instances"
    deadline = time.time() + 120
    while time.time() < deadline and (not records.exists() or len(list(records.glob("*.npz"))) < 40):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(records.glob("*.npz")))
    assert 40 <= finished < 26 * 26  # killed part-way through
    result = decode_blocks(probabilities, decoder, out, block=16, halo=12, resume=True)
    assert np.array_equal(np.asarray(result.labels), decoder.decode(probabilities))


def test_leading_loop_axes_are_decoded_plane_by_plane_with_unique_ids():
    decoder = DistanceDecoder()
    planes = [nuclei_sample((90, 70), seed=20 + t, hard=True).labels for t in range(3)]
    probabilities = np.stack([probabilities_for(lab, decoder) for lab in planes])  # (T, C, Y, X)
    result = decode_blocks(probabilities, decoder, block=32, halo=16, spatial_dims=2)
    labels = result.labels
    assert labels.shape == (3, 90, 70)
    ids = [set(np.unique(labels[t])) - {0} for t in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])  # unique over the whole stack
    for t in range(3):
        assert same_objects(decoder.decode(probabilities[t]), labels[t])


def test_min_size_counts_whole_objects_and_bad_arguments_are_named():
    decoder = BoundaryDecoder(min_size=30)
    truth = np.zeros((64, 64), np.uint16)
    truth[30:34, 28:36] = 1   # 32 pixels, cut by the seam at x=32: kept (its halves are 16 each)
    truth[5:9, 5:9] = 2       # 16 pixels: dropped
    probabilities = probabilities_for(truth, decoder, sigma=0.3)
    labels = decode_blocks(probabilities, decoder, block=32, halo=2).labels
    assert np.unique(labels).tolist() == [0, 1] and (labels[truth == 1] == 1).mean() > 0.9
    with pytest.raises(ValueError, match="needs 5 probability channels"):
        decode_blocks(probabilities, "distance")
    with pytest.raises(ValueError, match="`block` must be an integer >= 1"):
        decode_blocks(probabilities, decoder, block=0)
    with pytest.raises(ValueError, match="`halo` must be"):
        decode_blocks(probabilities, decoder, halo=(4, 4, 4))
    with pytest.raises(ValueError, match="`resume`=True needs `out`"):
        decode_blocks(probabilities, decoder, resume=True)
    with pytest.raises(ValueError, match="`probabilities` must be"):
        decode_blocks(probabilities[0], decoder)


def _disc_field(shape, spacing: int = 40, seed: int = 0) -> np.ndarray:
    """Labels: a jittered grid of discs (radius 8-14 px), as in benchmarks/memory.py --output instances."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[-15:16, -15:16]
    count = 0
    for cy in range(spacing // 2, shape[0] - 16, spacing):
        for cx in range(spacing // 2, shape[1] - 16, spacing):
            y, x, r = cy + rng.integers(-4, 5), cx + rng.integers(-4, 5), rng.uniform(8, 14)
            count += 1
            labels[y - 15:y + 16, x - 15:x + 16][(yy ** 2 + xx ** 2) <= r * r] = count
    return labels


def test_the_seam_merge_and_the_table_hold_memory_per_object_not_per_block(tmp_path):
    """After the blocks are decoded, the merge, the final ids and the per-object table must not keep what grows
    with the image (seam bands: ~130 KB per 256² block here), only a few hundred bytes per object: peak traced
    memory from the end of step 1 on, for 512² vs 1536² (4 vs 36 blocks)."""
    import tracemalloc

    from segarch.instances import measure, write_table

    decoder = DistanceDecoder()

    def run(side: int, name: str) -> tuple[int, int]:
        probabilities = probabilities_for(_disc_field((side, side), seed=side), decoder)

        def from_the_merge_on(done, total):
            if done == total // 2:  # every block decoded: what is traced from here is the merge's and the table's
                tracemalloc.reset_peak()

        tracemalloc.start()
        result = decode_blocks(probabilities, decoder, tmp_path / f"{name}.zarr", block=256, halo=32,
                               progress=from_the_merge_on)
        table = measure(result.labels)
        write_table(table, tmp_path / f"{name}.csv")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(table["label"]) == result.report["objects"]
        assert side < 1536 or result.report["merged_across_seams"] > 100  # many objects cross seams
        return peak, result.report["objects"]

    run(64, "warm_up")  # imports and first-use caches are not the merge's
    (small, small_objects), (large, large_objects) = run(512, "small"), run(1536, "large")
    assert large_objects > 8 * small_objects > 1000
    growth_per_object = (large - small) / (large_objects - small_objects)
    assert growth_per_object < 1000, (small, large, small_objects, large_objects)
