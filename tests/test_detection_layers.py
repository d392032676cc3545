"""The detection operators (segarch.layers.detection) against brute-force NumPy references on random inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from segarch.layers.detection import (batched_nms, box_iou, clip_boxes, decode_boxes, encode_boxes, grid_anchors,
                                      nms, roi_align)


def _random_boxes(rng, n, d, extent=40.0):
    start = rng.uniform(-5, extent, size=(n, d))
    size = rng.uniform(1, extent / 2, size=(n, d))
    return np.concatenate([start, start + size], 1)


def _iou_reference(a, b):
    d = a.shape[1] // 2
    out = np.zeros((len(a), len(b)))
    for i, j in itertools.product(range(len(a)), range(len(b))):
        inter = np.prod([max(0.0, min(a[i, d + k], b[j, d + k]) - max(a[i, k], b[j, k])) for k in range(d)])
        union = np.prod(a[i, d:] - a[i, :d]) + np.prod(b[j, d:] - b[j, :d]) - inter
        out[i, j] = inter / union
    return out


def _nms_reference(boxes, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(_iou_reference(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= threshold for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("d", [2, 3])
def test_iou_and_nms_match_brute_force(d):
    rng = np.random.default_rng()
    a, b = _random_boxes(rng, 30, d), _random_boxes(rng, 20, d)
    np.testing.assert_allclose(box_iou(torch.tensor(a), torch.tensor(b)).numpy(), _iou_reference(a, b), atol=1e-9)
    scores = rng.random(len(a))
    for threshold in (0.1, 0.3, 0.7):
        kept = nms(torch.tensor(a), torch.tensor(scores), threshold).tolist()
        assert kept == _nms_reference(a, scores, threshold)
    groups = rng.integers(0, 3, len(a))
    kept = set(batched_nms(torch.tensor(a), torch.tensor(scores), torch.tensor(groups), 0.3).tolist())
    expected = set()
    for g in range(3):
        index = np.flatnonzero(groups == g)
        expected |= {int(index[k]) for k in _nms_reference(a[index], scores[index], 0.3)}
    assert kept == expected


def test_nms_names_bad_input():
    boxes = torch.tensor([[0.0, 0, 4, 4]])
    with pytest.raises(ValueError, match=r"`scores` must be \(1,\)"):
        nms(boxes, torch.ones(2), 0.5)
    with pytest.raises(ValueError, match="`iou_threshold` must be in"):
        nms(boxes, torch.ones(1), 1.5)
    with pytest.raises(ValueError, match=r"`boxes` must be \(N, 4\) or \(N, 6\)"):
        nms(torch.zeros(3, 5), torch.ones(3), 0.5)


@pytest.mark.parametrize("d", [2, 3])
def test_box_coding_round_trips_and_matches_the_formula(d):
    rng = np.random.default_rng()
    boxes, refs = torch.tensor(_random_boxes(rng, 50, d)), torch.tensor(_random_boxes(rng, 50, d))
    weights = [10.0] * d + [5.0] * d
    deltas = encode_boxes(boxes, refs, weights)
    np.testing.assert_allclose(decode_boxes(deltas, refs, weights).numpy(), boxes.numpy(), atol=1e-8)
    b, r = boxes.numpy(), refs.numpy()
    size_r = r[:, d:] - r[:, :d]
    expected = np.concatenate([10 * ((b[:, :d] + b[:, d:]) / 2 - (r[:, :d] + r[:, d:]) / 2) / size_r,
                               5 * np.log((b[:, d:] - b[:, :d]) / size_r)], 1)
    np.testing.assert_allclose(deltas.numpy(), expected, atol=1e-8)
    clipped = clip_boxes(boxes, (30,) * d)
    assert clipped.min() >= 0 and clipped.max() <= 30


def _bilinear(feature, point):
    """torchvision's roi_align bilinear read of one channel map at one point (any dims)."""
    shape = feature.shape
    for p, n in zip(point, shape):
        if p < -1.0 or p > n:
            return 0.0
    lows, highs, fracs = [], [], []
    for p, n in zip(point, shape):
        p = max(p, 0.0)
        low = int(p)
        if low >= n - 1:
            low = high = n - 1
            p = float(low)
        else:
            high = low + 1
        lows.append(low)
        highs.append(high)
        fracs.append(p - low)
    value = 0.0
    for corner in itertools.product((0, 1), repeat=len(shape)):
        weight, index = 1.0, []
        for axis, c in enumerate(corner):
            weight *= fracs[axis] if c else 1 - fracs[axis]
            index.append(highs[axis] if c else lows[axis])
        value += weight * feature[tuple(index)]
    return value


def _roi_align_reference(features, rois, size, scale, ratio, aligned):
    d = features.ndim - 2
    out = np.zeros((len(rois), features.shape[1], *(size,) * d))
    for k, roi in enumerate(rois):
        offset = 0.5 if aligned else 0.0
        start = roi[1:1 + d] * scale - offset
        extent = roi[1 + d:] * scale - offset - start
        if not aligned:
            extent = np.maximum(extent, 1.0)
        bins = extent / size
        for c in range(features.shape[1]):
            fmap = features[int(roi[0]), c]
            for cell in itertools.product(range(size), repeat=d):
                total = 0.0
                for sample in itertools.product(range(ratio), repeat=d):
                    point = [start[a] + cell[a] * bins[a] + (sample[a] + 0.5) * bins[a] / ratio for a in range(d)]
                    total += _bilinear(fmap, point)
                out[(k, c, *cell)] = total / ratio ** d
    return out


@pytest.mark.parametrize("d,aligned", [(2, True), (2, False), (3, True)])
def test_roi_align_matches_the_brute_force_reference(d, aligned):
    rng = np.random.default_rng()
    spatial = (9, 13) if d == 2 else (5, 7, 6)
    features = rng.normal(size=(2, 2, *spatial))
    boxes = _random_boxes(rng, 6, d, extent=2 * min(spatial))  # some reach past the map's border
    rois = np.concatenate([rng.integers(0, 2, (6, 1)), boxes], 1)
    size = 3 if d == 2 else 2
    got = roi_align(torch.tensor(features), torch.tensor(rois), size, spatial_scale=0.5, sampling_ratio=2,
                    aligned=aligned).numpy()
    np.testing.assert_allclose(got, _roi_align_reference(features, rois, size, 0.5, 2, aligned), atol=1e-9)


def test_roi_align_of_a_ramp_is_the_bin_centres_and_gradients_flow():
    ramp = torch.arange(16.0).repeat(16, 1)[None, None].requires_grad_()  # value = x
    out = roi_align(ramp, torch.tensor([[0.0, 2, 4, 10, 12]]), 4, sampling_ratio=2)
    # a box x 4..12 with aligned=True: sample centres at 4 + (j + 0.5) · 2 - 0.5 per bin
    np.testing.assert_allclose(out[0, 0, 0].detach().numpy(), [4.5, 6.5, 8.5, 10.5])
    out.sum().backward()
    assert ramp.grad.sum() > 0
    with pytest.raises(ValueError, match=r"`rois` \(K, 5\)"):
        roi_align(ramp, torch.zeros(1, 4), 4)


@pytest.mark.parametrize("d", [2, 3])
def test_grid_anchors_are_centred_on_cells_with_the_asked_size(d):
    shape = (3, 4) if d == 2 else (2, 3, 4)
    anchors = grid_anchors(shape, 8, 16.0, (0.5, 1.0, 2.0))
    assert anchors.shape == (np.prod(shape) * 3, 2 * d)
    centres = (anchors[:, :d] + anchors[:, d:]) / 2
    sizes = anchors[:, d:] - anchors[:, :d]
    np.testing.assert_allclose(centres[:3].numpy(), np.full((3, d), 4.0))  # cell 0, three ratios
    np.testing.assert_allclose(centres[-1].numpy(), [(n - 0.5) * 8 for n in shape])
    np.testing.assert_allclose(sizes.prod(1).numpy(), np.full(len(anchors), 16.0 ** d), rtol=1e-5)
    np.testing.assert_allclose((sizes[0, -2] / sizes[0, -1]).item(), 0.5, rtol=1e-6)
