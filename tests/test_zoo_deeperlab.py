"""DeeperLab: its structure (space-to-depth decoder, five heads), its keypoint targets and its keypoint grouping.

The shared tester (tests/test_zoo_models.py) runs it like every entry (shapes of each head, gradients on every
parameter, a loss of all heads lowered by a few steps, the parameter count); here: what is particular to it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segarch import zoo
from segarch.blocks.space_to_depth import depth_to_space, space_to_depth
from segarch.instances.deeperlab import DeeperLabDecoder, keypoint_targets, object_keypoints
from segarch.nets.deeperlab import keypoint_count, keypoint_edges
from test_zoo_panoptic import assert_two_boxes_decoded, box_labels, semantic_scores, two_separated_boxes

pytestmark = pytest.mark.slow  # builds and runs networks of the zoo


def _tiny(dims: int = 2, **options):
    config = {**zoo.card("deeperlab").test_config, **options}
    return zoo.create("deeperlab", spatial_dims=dims, in_channels=1, out_channels=3, **config)


def test_paper_configuration_has_the_space_to_depth_decoder_and_five_heads_of_the_papers_widths():
    with torch.device("meta"):
        net = zoo.create("deeperlab", **zoo.card("deeperlab").paper_config)
    assert [(h.name, h.kind, h.channels) for h in net.heads] == [
        ("semantic", "semantic", 66), ("keypoints", "keypoints", 5), ("short_offset", "offset", 10),
        ("middle_offset", "offset", 16), ("long_offset", "offset", 10)]
    assert net.encoder.depth == 71 and net.encoder.output_stride == 16
    assert net.decoder.reduce.conv.out_channels == 32
    first, second = net.decoder.convs
    # ASPP (256) + the 1/4 features reduced to 32 and folded 4x4 into channels
    assert first.depthwise.conv.in_channels == 256 + 32 * 16
    assert first.depthwise.conv.kernel_size == second.depthwise.conv.kernel_size == (7, 7)
    assert first.pointwise.conv.out_channels == second.pointwise.conv.out_channels == 4096
    widths = {name: head[0].pointwise.conv.out_channels for name, head in net.predictors.items()}
    assert widths == {"semantic": 256, "keypoints": 64, "short_offset": 64, "middle_offset": 64, "long_offset": 64}
    assert all(head[0].depthwise.conv.kernel_size == (7, 7) for head in net.predictors.values())
    assert all(head[0].depthwise.conv.in_channels == 256 for head in net.predictors.values())  # 4096 / 16


def test_decoder_folds_the_quarter_features_without_upsampling():
    """The decoder's output equals depth-to-space of its 1/16 convolutions over [ASPP, space-to-depth(1/4)]."""
    torch.manual_seed(0)
    net = _tiny().eval()
    high, low = torch.randn(1, 16, 4, 6), torch.randn(1, net.encoder.out_channels[1], 16, 24)
    with torch.no_grad():
        out = net.decoder(high, low)
        expected = depth_to_space(net.decoder.convs(torch.cat([high, space_to_depth(net.decoder.reduce(low), 4)],
                                                              1)), 4)
    assert out.shape == (1, 4, 16, 24)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("dims,shape", [(2, (32, 48)), (3, (16, 32, 16))])
def test_forward_returns_the_named_heads_at_the_input_size(dims, shape):
    torch.manual_seed(0)
    net = _tiny(dims).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *shape))
    k = keypoint_count(dims)
    assert k == (5 if dims == 2 else 9)
    assert list(y) == ["semantic", "keypoints", "short_offset", "middle_offset", "long_offset"]
    assert {n: tuple(v.shape) for n, v in y.items()} == net.output_shapes((1, 1, *shape))
    assert y["long_offset"].shape[1] == k * dims and y["middle_offset"].shape[1] == 2 * (k - 1) * dims


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="`kernel_size` must be odd for DeeperLab"):
        zoo.create("deeperlab", kernel_size=4)
    with pytest.raises(ValueError, match="decoder_channels"):
        zoo.create("deeperlab", decoder_channels=0)
    with pytest.raises(ValueError, match="Unknown option"):
        zoo.create("deeperlab", backbone="resnet")


def _outputs_from(labels, radius=3.0, classes=None):
    outputs = keypoint_targets(labels, radius=radius)
    outputs["semantic"] = semantic_scores(labels, classes)
    return outputs


def test_keypoints_are_the_centre_of_mass_and_the_box_corners():
    rng = np.random.default_rng()
    y0, x0 = (int(v) for v in rng.integers(0, 10, size=2))
    h, w = (int(v) for v in rng.integers(3, 12, size=2))
    labels = box_labels((32, 32), [((y0, y0 + h), (x0, x0 + w))])
    labels[y0, x0] = 0  # not a full box: the centre of mass moves, the box does not
    ids, points = object_keypoints(labels)
    assert ids.tolist() == [1]
    np.testing.assert_allclose(points[0, 0], np.argwhere(labels == 1).mean(0))
    assert points[0, 1:].tolist() == [[y0, x0], [y0, x0 + w - 1], [y0 + h - 1, x0], [y0 + h - 1, x0 + w - 1]]
    assert keypoint_edges(2) == ((0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (2, 0), (3, 0), (4, 0))


def test_targets_offsets_point_at_the_keypoints():
    rng = np.random.default_rng()
    y0, x0 = (int(v) for v in rng.integers(2, 8, size=2))
    labels = box_labels((32, 32), [((y0, y0 + 7), (x0, x0 + 5)), ((20, 30), (18, 31))])
    t = keypoint_targets(labels, radius=3)
    assert t["keypoints"].shape == (5, 32, 32) and t["long_offset"].shape == (10, 32, 32)
    assert t["middle_offset"].shape == (16, 32, 32)
    _, points = object_keypoints(labels)
    grid = np.indices(labels.shape)
    long = t["long_offset"].reshape(5, 2, 32, 32)
    for i in (1, 2):
        for k in range(5):  # every object pixel points at each of its object's keypoints
            votes = (grid + long[k])[:, labels == i]
            np.testing.assert_allclose(votes, np.repeat(points[i - 1, k][:, None], votes.shape[1], 1), atol=1e-4)
    short = t["short_offset"].reshape(5, 2, 32, 32)
    disk = t["keypoints"] > 0
    for k in range(5):  # within the disks, short offsets land on a keypoint of that type
        landed = (grid + short[k])[:, disk[k]].T
        distance = np.linalg.norm(landed[:, None] - points[None, :, k], axis=2).min(1)
        assert distance.max() < 1e-4
    middle = t["middle_offset"].reshape(8, 2, 32, 32)
    corner = tuple(int(v) for v in points[1, 2])  # object 2's top-right corner: its edge to the centre
    np.testing.assert_allclose(np.array(corner) + middle[keypoint_edges(2).index((2, 0)), :, corner[0], corner[1]],
                               points[1, 0], atol=1e-4)
    assert long[:, :, labels == 0].max() == 0
    with pytest.raises(ValueError, match="`radius` must be a positive number of pixels, got -1"):
        keypoint_targets(labels, radius=-1)


@pytest.mark.parametrize("dims", [2, 3])
def test_decoder_finds_two_well_separated_boxes(dims):
    labels = two_separated_boxes(dims)
    assert_two_boxes_decoded(DeeperLabDecoder(radius=3)(_outputs_from(labels)), labels)


def test_decoder_separates_random_touching_boxes_of_different_sizes():
    """Two boxes sharing a whole side: only the keypoints (and long offsets) tell them apart."""
    rng = np.random.default_rng()
    y, split = int(rng.integers(3, 10)), int(rng.integers(12, 22))
    labels = box_labels((40, 40), [((y, y + 14), (3, split)), ((y + 2, y + 12), (split, 36))])
    result = DeeperLabDecoder(radius=4)(_outputs_from(labels, radius=4))
    assert result.instances.max() == 2
    for i in (1, 2):
        assert len(np.unique(result.instances[labels == i])) == 1
    np.testing.assert_array_equal(result.instances > 0, labels > 0)


def test_decoder_reads_logits_and_ignores_keypoints_without_votes():
    labels = box_labels((32, 32), [((3, 11), (3, 11)), ((18, 28), (18, 28))])
    outputs = _outputs_from(labels)
    logits = dict(outputs, keypoints=np.where(outputs["keypoints"] > 0, 8.0, -8.0).astype(np.float32))
    assert DeeperLabDecoder(radius=3)(logits).instances.max() == 2
    # a heatmap too weak to gather `threshold` votes anywhere: no keypoints, no objects
    weak = dict(outputs, keypoints=outputs["keypoints"] * 0.01)
    assert DeeperLabDecoder(radius=3)(weak).instances.max() == 0
    # pixels whose long offsets point nowhere near an object are left out with max_distance
    far = dict(outputs, long_offset=outputs["long_offset"] + 20 * (labels == 2))
    kept = DeeperLabDecoder(radius=3, max_distance=5.0)(far)
    assert kept.instances.max() == 1 and (kept.instances[labels == 2] == 0).all()


def test_decoder_fuses_classes_like_panoptic_deeplab():
    labels = box_labels((32, 32), [((2, 10), (2, 10)), ((18, 28), (18, 28))])
    classes = np.where(labels > 0, 2, 0)
    classes[2:4, 2:10] = 1  # a quarter of object 1 reads "class 1": the majority (class 2) wins
    classes[12:14, 0:3] = 3  # a small stuff region of class 3
    outputs = _outputs_from(labels, classes=classes)
    result = DeeperLabDecoder(thing_classes=(1, 2), radius=3)(outputs)
    assert sorted(result.classes.tolist()) == [2, 2]
    assert (result.semantic[labels == 1] == 2).all()
    assert (result.instances[classes == 3] == 0).all() and (result.semantic[classes == 3] == 3).all()
    pruned = DeeperLabDecoder(thing_classes=(1, 2), radius=3, stuff_area=10)(outputs)
    assert (pruned.semantic[classes == 3] == -1).all()


def test_decoder_on_a_network_output_and_bad_input():
    torch.manual_seed(0)
    net = _tiny().eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32))
    result = DeeperLabDecoder(radius=3)(out)  # a batch of 1, logits: runs, whatever an untrained net finds
    assert result.instances.shape == (32, 32) and result.panoptic.shape == (32, 32)
    with pytest.raises(ValueError, match=r"needs the heads .*missing \['long_offset'\]"):
        DeeperLabDecoder()({k: v for k, v in out.items() if k != "long_offset"})
    with pytest.raises(ValueError, match=r"`outputs\['keypoints'\]` must be \(K, \*S\).*K = 5 \(2D\) or 9 \(3D\)"):
        DeeperLabDecoder()(dict(out, keypoints=out["keypoints"][:, :3]))
    with pytest.raises(ValueError, match=r"`outputs\['middle_offset'\]` must be \(16, 32, 32\)"):
        DeeperLabDecoder()(dict(out, middle_offset=out["middle_offset"][:, :8]))
    with pytest.raises(ValueError, match="`nms_kernel` must be an odd positive integer, got 4"):
        DeeperLabDecoder(nms_kernel=4)
    with pytest.raises(ValueError, match="`max_distance` must be a positive number of pixels or None, got 0"):
        DeeperLabDecoder(max_distance=0)


def test_decoder_recovers_touching_generated_nuclei_from_their_targets():
    """Generated nuclei touch and overlap: decoding their exact targets gives back nearly every nucleus whole."""
    from segarch.samples import nuclei

    seed = int(np.random.default_rng().integers(1_000_000))
    _, labels = nuclei((128, 128), radius=(5, 10), count=20, seed=seed)
    result = DeeperLabDecoder(radius=6)(_outputs_from(labels, radius=6))
    ids = np.unique(labels)[1:]
    whole = sum(1 for i in ids if len(np.unique(result.instances[labels == i])) == 1
                and (labels[result.instances == result.instances[labels == i][0]] == i).all())
    assert whole >= 0.9 * len(ids), (seed, whole, len(ids))
