"""PointRend: point sampling, uncertain-point selection and adaptive subdivision (segarch.layers.points), the
instance model on Mask R-CNN and the semantic model on Semantic FPN: structure and counts, what they compute, two
squares found after a few training steps. The shared tester (tests/test_zoo_models.py) runs both entries too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segarch import zoo
from segarch.layers.points import (binary_uncertainty, class_uncertainty, most_uncertain_cells, point_sample,
                                   subdivide, training_points)


def _count(net) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("dims", [2, 3])
def test_point_sample_reads_cells_at_their_centres_and_interpolates_between(dims):
    features = torch.randn(2, 3, *(5,) * dims)
    cells = torch.from_numpy(np.random.default_rng().integers(0, 5, size=(2, 7, dims)))
    values = point_sample(features, (cells + 0.5) / 5)
    for n in range(2):
        for p in range(7):
            assert torch.allclose(values[n, :, p], features[(n, slice(None), *cells[n, p].tolist())], atol=1e-6)
    between = cells.clone()
    between[..., -1] = between[..., -1].clamp(max=3)
    halfway = (between + 0.5) / 5
    halfway[..., -1] += 0.5 / 5  # midway to the next cell along the last axis: the two cells' mean
    nxt = between.clone()
    nxt[..., -1] += 1
    mean = [(features[(n, slice(None), *between[n, p].tolist())] + features[(n, slice(None), *nxt[n, p].tolist())])
            / 2 for n in range(2) for p in range(7)]
    assert torch.allclose(point_sample(features, halfway).permute(0, 2, 1).reshape(14, 3), torch.stack(mean),
                          atol=1e-6)
    with pytest.raises(ValueError, match=r"`points` must be \(2, P, "):
        point_sample(features, torch.rand(2, 7, dims + 1))


def _disk_logits(size: int, radius: float = 0.3) -> torch.Tensor:
    """A signed distance to a circle's edge (positive inside), as logits (1, 1, size, size)."""
    centres = (torch.arange(size) + 0.5) / size
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return (radius - ((y - 0.5) ** 2 + (x - 0.51) ** 2).sqrt())[None, None] * 10


def test_training_points_favour_uncertain_places():
    coarse = _disk_logits(16).repeat(4, 1, 1, 1)
    points = training_points(coarse, binary_uncertainty, 100, oversample=3, importance=0.75)
    assert points.shape == (4, 100, 2) and ((points >= 0) & (points <= 1)).all()
    near = (((points - 0.5) ** 2).sum(-1).sqrt() - 0.3).abs() < 0.05  # within 0.05 of the edge
    assert near[:, :75].float().mean() > 0.5 and near[:, 75:].float().mean() < 0.4  # uncertain vs uniform
    with pytest.raises(ValueError, match="`importance` in"):
        training_points(coarse, binary_uncertainty, 10, importance=1.5)


def test_most_uncertain_cells_and_the_class_margin():
    logits = torch.tensor([[[[3.0, 0.1], [-2.0, 0.5]], [[0.0, 0.0], [0.0, 0.4]]]])  # two classes, 2×2
    uncertainty = class_uncertainty(logits)
    assert torch.allclose(uncertainty, -torch.tensor([[[[3.0, 0.1], [2.0, 0.1]]]]))
    indices, points = most_uncertain_cells(uncertainty, 2)
    assert sorted(indices[0].tolist()) == [1, 3]
    assert sorted(map(tuple, points[0].tolist())) == [(0.25, 0.75), (0.75, 0.75)]


def test_subdivision_with_an_exact_point_predictor_renders_a_crisp_edge():
    coarse = _disk_logits(7)

    def truth(points):  # the disk's own logits at the points: a perfect point head
        return (0.3 - ((points[..., 0] - 0.5) ** 2 + (points[..., 1] - 0.51) ** 2).sqrt())[:, None] * 10

    refined = subdivide(coarse, binary_uncertainty, truth, steps=5, count=28 * 28)
    assert refined.shape == (1, 1, 224, 224)
    wanted = _disk_logits(224) > 0
    upsampled = F.interpolate(coarse, size=(224, 224), mode="bilinear", align_corners=False) > 0
    wrong_refined = ((refined > 0) != wanted).sum().item()
    wrong_upsampled = (upsampled != wanted).sum().item()
    assert wrong_refined < 0.2 * wrong_upsampled, (wrong_refined, wrong_upsampled)


def test_instance_paper_configuration():
    with torch.device("meta"):
        net = zoo.create("pointrend", **zoo.card("pointrend").paper_config)
    head = net.mask_head
    assert head.reduce.kernel_size == (2, 2) and head.reduce.stride == (2, 2)
    assert [fc.out_features for fc in head.fcs] == [1024, 1024] and head.fcs[0].in_features == 256 * 7 * 7
    assert head.predictor.out_features == 91 * 7 * 7
    assert [layer.in_channels for layer in net.point_head.layers] == [256 + 91] * 3
    assert net.point_head.predictor.out_channels == 91
    assert (net.train_points, net.oversample, net.importance) == (196, 3.0, 0.75)
    assert (net.subdivision_steps, net.subdivision_points) == (5, 784)
    norms = (torch.nn.BatchNorm2d, torch.nn.GroupNorm)  # the backbone's group norms (the default) or batch norms
    batch_norm = sum(p.numel() for m in net.modules() if isinstance(m, norms) for p in m.parameters())
    # torchvision's Mask R-CNN R50-FPN - its mask head + coarse head + point head (the card's sum)
    assert _count(net) - batch_norm == 44_401_393 - 2_646_107 + 18_728_555 + 298_932


@pytest.mark.parametrize("dims", [2, 3])
def test_instance_masks_are_refined_on_the_subdivided_grid(dims):
    torch.manual_seed(0)
    config = {**zoo.card("pointrend").test_config, "score_threshold": 0.0}
    net = zoo.create("pointrend", spatial_dims=dims, in_channels=1, out_channels=3, **config).eval()
    # untrained, the point head's outputs sit within 1e-6 of the coarse mask's (its predictor starts at std
    # 0.001): wider weights make every refined cell visible above float rounding
    torch.nn.init.normal_(net.point_head.predictor.weight, std=1.0)
    pyramid = net.pyramid(torch.randn(1, 1, *(64,) * dims))
    boxes = [torch.tensor([[4.0] * dims + [30.0] * dims, [10.0] * dims + [60.0] * dims])]
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        masks = net.mask_probabilities(pyramid, boxes, labels)
        assert masks.shape == (2, *(7 * 2 ** config["subdivision_steps"],) * dims)
        net.subdivision_steps = 1  # one step: the point head's cells against the coarse mask up-sampled ×2
        masks = net.mask_probabilities(pyramid, boxes, labels)
        coarse = torch.sigmoid(net.mask_logits(pyramid, boxes)[torch.arange(2), labels])
    mode = "bilinear" if dims == 2 else "trilinear"
    upsampled = F.interpolate(coarse[:, None], scale_factor=2, mode=mode, align_corners=False)[:, 0]
    changed = (masks - upsampled).abs().flatten(1) > 1e-6
    assert changed.sum(1).tolist() == [config["subdivision_points"]] * 2
    # the cells replaced are the most uncertain ones (probability nearest 0.5)
    uncertainty = -(upsampled - 0.5).abs().flatten(1)
    for i in range(2):
        assert uncertainty[i][changed[i]].min() >= uncertainty[i][~changed[i]].max() - 1e-6


@pytest.mark.slow
def test_instance_trained_for_a_few_steps_on_two_squares_finds_two_objects():
    from detector_helpers import assert_one_object_per_square, train_on_two_squares

    # A fixed draw (seed 0): over draws 0-5, 4 (0, 2, 3, 5) find and outline both squares, 1 and 4 find one
    labels, found = train_on_two_squares("pointrend", seed=0)
    assert_one_object_per_square(labels, found)


def test_semantic_paper_configuration():
    with torch.device("meta"):
        net = zoo.create("pointrend_semantic", **zoo.card("pointrend_semantic").paper_config)
        base = zoo.create("semantic_fpn", **zoo.card("semantic_fpn").paper_config)
    assert [layer.in_channels for layer in net.point_head.layers] == [256 + 19] * 3
    assert (net.train_points, net.subdivision_points, net.subdivision_steps) == (2048, 8192, 2)
    assert _count(net) - _count(base) == 3 * (275 * 256 + 256) + 275 * 19 + 19


@pytest.mark.parametrize("dims", [2, 3])
def test_semantic_output_is_the_coarse_prediction_with_point_head_logits_at_points(dims):
    torch.manual_seed(0)
    config = zoo.card("pointrend_semantic").test_config
    net = zoo.create("pointrend_semantic", spatial_dims=dims, in_channels=1, out_channels=3, **config)
    shape = (64,) * dims
    x = torch.randn(2, 1, *shape)
    mode = "bilinear" if dims == 2 else "trilinear"
    with torch.no_grad():
        coarse = net.coarse_logits(x)[1]
        upsampled = F.interpolate(coarse, size=shape, mode=mode, align_corners=False)
        trained = net.train()(x)
        refined = net.eval()(x)
    for y in (trained, refined):
        assert y.shape == (2, 3, *shape) and torch.isfinite(y).all()
    changed = ((trained - upsampled).abs().amax(1) > 1e-6).flatten(1).sum(1)
    assert ((changed > 0) & (changed <= config["train_points"])).all()  # train mode: the sampled pixels only
    assert ((refined - upsampled).abs() > 1e-3).any()
    net.subdivision_points = 64 ** dims  # points enough for every pixel: the point head predicts each one
    with torch.no_grad():
        pyramid, coarse = net.coarse_logits(x)
        every = net(x)
        axes = [(torch.arange(64) + 0.5) / 64] * dims
        centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(1, -1, dims).repeat(2, 1, 1)
        wanted = net.point_head(point_sample(pyramid[0], centres), point_sample(coarse, centres))
    assert torch.allclose(every.flatten(2), wanted, atol=1e-5)


def test_semantic_points_weigh_as_much_as_the_paper_point_loss():
    """Train mode scales the point logits' gradient by pixels/points: a per-pixel mean loss gives the point head
    the gradient of the mean loss over its points."""
    torch.manual_seed(0)
    config = {**zoo.card("pointrend_semantic").test_config, "train_points": 64}
    net = zoo.create("pointrend_semantic", spatial_dims=2, in_channels=1, out_channels=2, **config).train()
    x = torch.randn(1, 1, 64, 64)
    captured = {}
    net.point_head.register_forward_hook(lambda module, args, out: captured.update(out=out))
    out = net(x)
    point_logits = captured["out"]
    point_logits.retain_grad()
    out.sum(1).mean().backward()  # a per-pixel mean: each point's gradient 1/pixels × pixels/points = 1/points
    assert torch.allclose(point_logits.grad, torch.full_like(point_logits, 1 / 64), rtol=1e-4)


@pytest.mark.slow
def test_semantic_pointrend_trains_and_predicts_through_segarch_like_any_semantic_model():
    import segarch
    from segarch.samples import nuclei

    seeds = np.random.default_rng().integers(0, 10_000, size=4)
    images, labels = zip(*[nuclei((96, 96), seed=int(s)) for s in seeds[:3]])
    model = segarch.train("pointrend_semantic", list(images), [lab > 0 for lab in labels], steps=60, batch_size=2,
                          options=zoo.card("pointrend_semantic").test_config)
    image, truth = nuclei((100, 72), seed=int(seeds[3]))  # not a multiple of 32: padded, tiled at 64
    found = segarch.predict(model, image, axes="YX", tile=64)
    assert found.shape == truth.shape and set(np.unique(found)) <= {0, 1}
    iou = ((found > 0) & (truth > 0)).sum() / ((found > 0) | (truth > 0)).sum()
    assert iou > 0.4, iou  # measured 0.71 in two runs of fresh draws


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="`train_points`"):
        zoo.create("pointrend_semantic", train_points=0)
    with pytest.raises(ValueError, match="`subdivision_points`"):
        zoo.create("pointrend", subdivision_points=0, **zoo.card("mask_rcnn").test_config)
    with pytest.raises(ValueError, match="Unknown option"):
        zoo.create("pointrend", fusion="sum")
