"""Panoptic-DeepLab: its structure, the multi-head output contract, its targets and its grouping decoder.

The shared tester (tests/test_zoo_models.py) runs it like every entry (shapes of each head, gradients on every
parameter, a loss of all heads lowered by a few steps, the parameter count); here: what is particular to it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segarch import zoo
from segarch.instances.panoptic import PanopticDeepLabDecoder, center_offset_targets, find_centers
from segarch.nets._heads import Head
from segarch.nets.panoptic_deeplab import PanopticDeepLab


def _tiny(dims: int = 2, **options) -> PanopticDeepLab:
    config = {**zoo.card("panoptic_deeplab").test_config, **options}
    return zoo.create("panoptic_deeplab", spatial_dims=dims, in_channels=1, out_channels=3, **config)


def test_paper_configuration_has_dual_aspp_dual_decoder_and_the_papers_widths():
    with torch.device("meta"):
        net = zoo.create("panoptic_deeplab", **zoo.card("panoptic_deeplab").paper_config)
    assert [(h.name, h.kind, h.channels) for h in net.heads] == [
        ("semantic", "semantic", 19), ("center", "center", 1), ("offset", "offset", 2)]
    semantic, instance = net.semantic_decoder, net.instance_decoder
    # two branches, no shared weights after the encoder
    assert not {id(p) for p in semantic.parameters()} & {id(p) for p in instance.parameters()}
    assert [p.conv.out_channels for p in semantic.project] == [64, 32]
    assert [p.conv.out_channels for p in instance.project] == [32, 16]
    assert [f.pointwise.conv.out_channels for f in semantic.fuse] == [256, 256]
    assert [f.pointwise.conv.out_channels for f in instance.fuse] == [128, 128]
    assert semantic.fuse[0].depthwise.conv.in_channels == 256 + 64  # ASPP output and the projected 1/8 features
    depthwise = [m for m in semantic.fuse.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.kernel_size == (5, 5) for m in depthwise)
    assert net.center_head[-1].out_channels == 1 and net.offset_head[-1].out_channels == 2
    assert net.center_head[-1].in_channels == net.offset_head[-1].in_channels == 32


def test_forward_returns_the_named_heads_at_the_input_size_in_2d_and_3d():
    torch.manual_seed(0)
    for dims, shape in ((2, (32, 48)), (3, (16, 32, 16))):
        net = _tiny(dims).eval()
        with torch.no_grad():
            y = net(torch.randn(1, 1, *shape))
        assert list(y) == ["semantic", "center", "offset"]
        assert {k: tuple(v.shape) for k, v in y.items()} == net.output_shapes((1, 1, *shape))
        assert y["offset"].shape[1] == dims
    assert net.get_head("offset") == Head("offset", "offset", 3, description=net.get_head("offset").description)
    with pytest.raises(ValueError, match="no head 'boxes'; its heads: semantic, center, offset"):
        net.get_head("boxes")


def test_resnet_backbone_and_option_errors():
    net = zoo.create("panoptic_deeplab", backbone="resnet", depth=50, aspp_channels=8, semantic_channels=8,
                     instance_channels=8, semantic_projections=(4, 4), instance_projections=(4, 4), head_channels=4)
    assert not any(m.groups > 1 for m in net.semantic_decoder.aspp.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match=r"`width`=0.5 does not apply to backbone='resnet'.*it takes depth"):
        zoo.create("panoptic_deeplab", backbone="resnet", width=0.5)
    with pytest.raises(ValueError, match=r"`depth`=50 does not apply to backbone='xception71'"):
        zoo.create("panoptic_deeplab", depth=50)
    with pytest.raises(ValueError, match=r"`semantic_projections` must be 2 positive integers.*got \(64,\)"):
        zoo.create("panoptic_deeplab", semantic_projections=(64,))
    with pytest.raises(ValueError, match="backbone"):
        zoo.create("panoptic_deeplab", backbone="vgg")


def box_labels(shape, boxes):
    """Labels 1..N, one axis-aligned box each (``boxes``: per box, (start, stop) per axis)."""
    labels = np.zeros(shape, np.int64)
    for i, box in enumerate(boxes, 1):
        labels[tuple(slice(a, b) for a, b in box)] = i
    return labels


def two_separated_boxes(dims: int) -> np.ndarray:
    """Two well separated boxes (ids 1, 2) in a 32² image or a 24³ volume."""
    boxes = [((3, 11),) * dims, ((17, 27),) * dims] if dims == 2 else [((2, 8),) * 3, ((12, 19),) * 3]
    return box_labels((32,) * 2 if dims == 2 else (24,) * 3, boxes)


def assert_two_boxes_decoded(result, labels: np.ndarray) -> None:
    """A panoptic decoder's result on :func:`two_separated_boxes`: the boxes' partition (ids in either order),
    background 0, both of class 1."""
    assert result.instances.max() == 2 and len(result.centers) == 2
    for i in (1, 2):
        ids = np.unique(result.instances[labels == i])
        assert len(ids) == 1 and ids[0] > 0
    assert (result.instances[labels == 0] == 0).all()
    assert set(np.unique(result.panoptic)) == {0, 1001, 1002}
    assert result.classes.tolist() == [1, 1]


def _outputs_from(labels, sigma=2.0, classes=None):
    center, offset = center_offset_targets(labels, sigma=sigma)
    return {"semantic": semantic_scores(labels, classes), "center": center, "offset": offset}


def semantic_scores(labels, classes=None):
    """One-hot semantic scores ``(K, *shape)``: ``classes`` per pixel, or object (1) vs background (0)."""
    semantic_map = (labels > 0).astype(np.int64) if classes is None else classes
    return np.stack([semantic_map == c for c in range(int(semantic_map.max()) + 1)]).astype(np.float32)


def test_targets_point_every_object_pixel_at_its_centre_of_mass():
    rng = np.random.default_rng()
    y0, x0 = rng.integers(0, 10, size=2)
    labels = box_labels((32, 32), [((y0, y0 + 7), (x0, x0 + 5)), ((20, 30), (18, 31))])
    center, offset = center_offset_targets(labels, sigma=3)
    assert center.shape == (1, 32, 32) and offset.shape == (2, 32, 32)
    grid = np.indices(labels.shape)
    for i in (1, 2):
        votes = (grid + offset)[:, labels == i]
        expected = np.argwhere(labels == i).mean(0)
        np.testing.assert_allclose(votes, np.repeat(expected[:, None], votes.shape[1], 1), atol=1e-4)
        peak = np.unravel_index(np.argmax(np.where(labels == i, center[0], 0)), labels.shape)
        assert np.abs(np.array(peak) - expected).max() <= 0.5
    assert offset[:, labels == 0].max() == 0 and center.max() <= 1.0
    with pytest.raises(ValueError, match="`sigma` must be a positive number of pixels, got 0"):
        center_offset_targets(labels, sigma=0)
    with pytest.raises(ValueError, match="`labels` must be a 2D or 3D array of integer instance ids"):
        center_offset_targets(labels.astype(float))


@pytest.mark.parametrize("dims", [2, 3])
def test_decoder_finds_two_well_separated_squares(dims):
    labels = two_separated_boxes(dims)
    assert_two_boxes_decoded(PanopticDeepLabDecoder()(_outputs_from(labels)), labels)


def test_decoder_on_random_touching_objects_recovers_each():
    rng = np.random.default_rng()
    y = int(rng.integers(4, 12))
    # two rectangles that touch along a whole side: only the offsets tell them apart
    labels = box_labels((40, 40), [((y, y + 12), (4, 16)), ((y, y + 12), (16, 30))])
    result = PanopticDeepLabDecoder(nms_kernel=5)(_outputs_from(labels))
    assert result.instances.max() == 2
    for i in (1, 2):
        assert len(np.unique(result.instances[labels == i])) == 1


def test_fusion_majority_class_stuff_and_thresholds():
    labels = box_labels((32, 32), [((2, 10), (2, 10)), ((18, 28), (18, 28))])
    classes = np.where(labels > 0, 2, 0)
    classes[2:4, 2:10] = 1  # a quarter of object 1 reads "class 1": the majority (class 2) wins
    classes[12:14, 0:3] = 3  # a small stuff region of class 3
    outputs = _outputs_from(labels, classes=classes)
    result = PanopticDeepLabDecoder(thing_classes=(1, 2))(outputs)
    assert result.classes.tolist() == [2, 2]
    assert (result.semantic[labels == 1] == 2).all()
    assert (result.instances[classes == 3] == 0).all() and (result.semantic[classes == 3] == 3).all()
    pruned = PanopticDeepLabDecoder(thing_classes=(1, 2), stuff_area=10)(outputs)
    assert (pruned.semantic[classes == 3] == -1).all() and (pruned.panoptic[classes == 3] == -1).all()
    # class 2 as stuff: only the class-1 strip of object 1 is a thing, one object of class 1
    only_one = PanopticDeepLabDecoder(thing_classes=(1,))(outputs)
    assert only_one.instances.max() == 1 and only_one.classes.tolist() == [1]
    assert (only_one.instances > 0).sum() == (classes == 1).sum()
    # a heatmap below the threshold: no centres, no objects
    dim = dict(outputs, center=outputs["center"] * 0.05)
    assert PanopticDeepLabDecoder(threshold=0.1)(dim).instances.max() == 0


def test_find_centers_keeps_top_k_local_maxima():
    heat = torch.zeros(20, 20)
    heat[3, 3], heat[3, 5], heat[15, 15], heat[10, 2] = 0.9, 0.5, 0.7, 0.3
    assert find_centers(heat, nms_kernel=3).tolist() == [[3, 3], [15, 15], [3, 5], [10, 2]]
    assert find_centers(heat, nms_kernel=7).tolist() == [[3, 3], [15, 15], [10, 2]]  # (3, 5) suppressed
    assert find_centers(heat, nms_kernel=7, top_k=1).tolist() == [[3, 3]]
    assert find_centers(heat, threshold=0.6).tolist() == [[3, 3], [15, 15]]


def test_decoder_accepts_a_batch_of_one_and_names_bad_input():
    labels = box_labels((32, 32), [((3, 11), (3, 11))])
    outputs = {k: torch.from_numpy(v)[None] for k, v in _outputs_from(labels).items()}
    assert PanopticDeepLabDecoder()(outputs).instances.max() == 1
    with pytest.raises(ValueError, match="needs the heads 'semantic', 'center' and 'offset'; missing \\['center'\\]"):
        PanopticDeepLabDecoder()({"semantic": outputs["semantic"], "offset": outputs["offset"]})
    two = {k: v.repeat(2, *[1] * (v.ndim - 1)) for k, v in outputs.items()}
    with pytest.raises(ValueError, match=r"`outputs\['offset'\]` must be \(d, \*S\).*one image"):
        PanopticDeepLabDecoder()(two)
    with pytest.raises(ValueError, match=r"`outputs\['center'\]` must be \(1, 32, 32\)"):
        PanopticDeepLabDecoder()(dict(outputs, center=outputs["center"][:, :, :16]))
    with pytest.raises(ValueError, match="`nms_kernel` must be an odd positive integer, got 4"):
        PanopticDeepLabDecoder(nms_kernel=4)


@pytest.mark.parametrize("name", ["panoptic_deeplab", "deeperlab"])  # efficientps is a detector: its own test
def test_predict_refuses_multi_head_networks_by_name(name, tmp_path):
    import segarch
    from segarch.models.model import Model

    config = zoo.card(name).test_config
    model = Model.from_zoo(name, in_channels=1, out_channels=2, **config)
    image = np.random.default_rng().random((64, 64), dtype=np.float32)
    out = tmp_path / "labels.zarr"
    with pytest.raises(ValueError, match=rf"`model` is '{name}', a panoptic architecture whose forward returns "
                                         r"several heads \(semantic, .*task 'semantic'") as err:
        segarch.predict(model, image, axes="YX", out=str(out))
    assert "Decoder" in str(err.value)
    assert not out.exists()  # refused before anything was written
    with pytest.raises(ValueError, match=rf"`model` is '{name}'"):  # a bare network is named from its class
        segarch.predict(model.network, image, axes="YX")
