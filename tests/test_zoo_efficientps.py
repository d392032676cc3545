"""EfficientPS and the EfficientNet-B5 backbone: structure and count at the paper's sizes, the 2-way FPN's two
paths, the semantic head's modules, the instance head, outputs in 2D and 3D, and a few training steps on two squares
giving two objects (detections, panoptic fusion, tiled instances).

The shared tester (tests/test_zoo_models.py) runs both like every entry; here: what is particular to them.
"""

from __future__ import annotations

import pytest
import torch

from segarch import zoo
from segarch.backbones.efficientnet import MBConv
from segarch.blocks.squeeze_excitation import SqueezeExcitation
from segarch.nets.efficientps import DPC_DILATIONS, TwoWayFPN
from segarch.nets.mask_rcnn import MaskRCNN

pytestmark = pytest.mark.slow  # builds and runs networks of the zoo


def _paper(name: str):
    with torch.device("meta"):
        return zoo.create(name, **zoo.card(name).paper_config)


def test_efficientnet_b5_has_the_scaled_widths_and_repeats_and_efficientps_drops_its_gates():
    b5 = _paper("efficientnet_b5")
    assert [len(s) for s in b5.encoder.stages] == [3, 5, 5, 7, 7, 9, 3]  # ceil(n * 2.2)
    assert b5.encoder.out_channels == (40, 64, 176, 2048)
    assert any(isinstance(m, SqueezeExcitation) for m in b5.modules())
    net = _paper("efficientps")
    assert net.encoder.out_channels == (40, 64, 176, 2048)
    assert not any(isinstance(m, SqueezeExcitation) for m in net.modules())
    kernels = {m.block[1].conv.kernel_size for m in net.encoder.modules() if isinstance(m, MBConv)
               and len(m.block) == 3}
    assert kernels == {(3, 3), (5, 5)}
    acts = {type(m).__name__ for m in net.encoder.modules() if isinstance(m, (torch.nn.LeakyReLU, torch.nn.SiLU))}
    assert acts == {"LeakyReLU"}


def test_paper_configuration_widths():
    net = _paper("efficientps")
    assert [c.conv.out_channels for c in net.fpn.top_down_laterals] == [256] * 4
    assert [c.conv.out_channels for c in net.fpn.bottom_up_laterals] == [256] * 4
    assert all(c.depthwise.conv.groups == 256 for c in net.fpn.outputs)  # separable 3x3 outputs
    head = net.semantic_head
    dilations = [c.depthwise.conv.dilation for c in head.dpc[0].convs]
    assert dilations == list(DPC_DILATIONS)
    assert head.dpc[0].project.conv.in_channels == 5 * 256 and head.dpc[0].project.conv.out_channels == 128
    assert [s.pointwise.conv.out_channels for s in head.lsfe[0]] == [128, 128]
    assert head.classifier.in_channels == 4 * 128 and head.classifier.out_channels == 19
    assert net.rpn.conv.conv.out_channels == 256
    assert net.rpn.objectness.out_channels == 3 and net.rpn.boxes.out_channels == 12
    # the instance head: Mask R-CNN's box head, a mask head of separable convolutions; 8 things + background
    assert isinstance(net, MaskRCNN) and net.anchor_sizes == (32, 64, 128, 256)
    assert net.box_head.fc6.in_features == 256 * 7 * 7 and net.box_head.fc7.out_features == 1024
    assert net.box_head.classes.out_features == 9 and net.box_head.boxes.out_features == 4 * 9
    separable = list(net.mask_head)[:4]
    assert [c.depthwise.conv.groups for c in separable] == [256] * 4
    assert [c.pointwise.conv.out_channels for c in separable] == [256] * 4
    assert isinstance(net.mask_head[4], torch.nn.ConvTranspose2d) and net.mask_head[-1].out_channels == 9
    # group norm everywhere by default (as mask_rcnn), the same parameters as the paper's iABN
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in net.modules()) > 100
    assert sum(p.numel() for p in net.parameters()) == 40_902_856  # the paper: 40.89M


def test_two_way_fpn_carries_information_both_ways():
    """The finest input reaches the coarsest output (bottom-up path) and the coarsest the finest (top-down)."""
    torch.manual_seed(0)
    fpn = TwoWayFPN(2, (2, 3, 4, 5), 4).eval()
    features = [torch.randn(1, c, 32 // 2 ** i, 32 // 2 ** i, requires_grad=True) for i, c in enumerate((2, 3, 4, 5))]
    out = fpn(features)
    assert [tuple(o.shape) for o in out] == [(1, 4, 32 >> i, 32 >> i) for i in range(4)]
    out[-1].sum().backward(retain_graph=True)
    assert features[0].grad.abs().sum() > 0
    for f in features:
        f.grad = None
    out[0].sum().backward()
    assert features[-1].grad.abs().sum() > 0


@pytest.mark.parametrize("dims,shape", [(2, (64, 96)), (3, (32, 64, 32))])
def test_outputs_in_2d_and_3d(dims, shape):
    torch.manual_seed(0)
    config = zoo.card("efficientps").test_config
    net = zoo.create("efficientps", spatial_dims=dims, in_channels=1, out_channels=4, thing_classes=(1, 3),
                     **config).eval()
    with torch.no_grad():
        found = net(torch.randn(2, 1, *shape))
    assert len(found) == 2
    for image in found:
        n = len(image["scores"])
        assert image["boxes"].shape == (n, 2 * dims) and image["semantic"].shape == (4, *shape)
        assert image["masks"].shape == image["mask_logits"].shape == (n, *shape)
        assert set(image["labels"].tolist()) <= {1, 3}  # semantic classes of the things
        for box, logits in zip(image["boxes"], image["mask_logits"]):
            outside = torch.ones(shape, dtype=torch.bool)
            outside[tuple(slice(int(box[a].floor()), int(box[dims + a].ceil())) for a in range(dims))] = False
            assert (logits[outside] == 0).all()  # pasted logits are 0 outside the box (the fusion's MLA)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.randn(1, 1, *[s + 16 for s in shape]))


def test_bad_options_and_targets_are_named():
    config = zoo.card("efficientps").test_config
    with pytest.raises(ValueError, match=r"`thing_classes` of EfficientPS must name distinct classes in 0..2"):
        zoo.create("efficientps", out_channels=3, thing_classes=(3,))
    with pytest.raises(ValueError, match="`anchor_sizes` must give 4 sizes"):
        zoo.create("efficientps", anchor_sizes=(32, 64, 128, 256, 512))
    with pytest.raises(ValueError, match=r"`norm` must be one of \(.group., .batch.\) for EfficientPS"):
        zoo.create("efficientps", norm="instance")
    net = zoo.create("efficientps", spatial_dims=2, in_channels=1, out_channels=2, **config)
    with pytest.raises(ValueError, match="needs `targets`"):
        net(torch.zeros(1, 1, 64, 64))
    target = {"boxes": torch.tensor([[0.0, 0, 8, 8]]), "labels": torch.tensor([5]),
              "masks": torch.ones(1, 64, 64, dtype=torch.uint8)}
    with pytest.raises(ValueError, match=r"labels must be semantic classes in 0..1, got \[5\]"):
        net(torch.zeros(1, 1, 64, 64), [target])


def test_predict_refuses_it_for_labels_names_the_fusion_and_writes_nothing(tmp_path):
    import numpy as np

    import segarch
    from segarch.models.model import Model

    model = Model.from_zoo("efficientps", in_channels=1, out_channels=2, **zoo.card("efficientps").test_config)
    out = tmp_path / "labels.zarr"
    with pytest.raises(ValueError, match=r"`model` is 'efficientps', a detector .*EfficientPSFusion"):
        segarch.predict(model, np.random.default_rng().random((64, 64), dtype=np.float32), axes="YX", out=str(out))
    assert not out.exists()


@pytest.mark.slow
def test_trained_for_a_few_steps_on_two_squares_it_finds_two_objects_and_two_panoptic_segments():
    # Fixed draw (seed 0) of the shared helper's squares; draws 0, 1, 2 all found both squares (about 60 s each).
    import segarch
    from detector_helpers import assert_one_object_per_square, train_detector_on_two_squares
    from segarch.instances.detections import labels_from_detections
    from segarch.instances.efficientps import EfficientPSFusion

    net, x, labels = train_detector_on_two_squares("efficientps", seed=0)
    with torch.no_grad():
        outputs = net(x)[0]
    assert_one_object_per_square(labels, labels_from_detections(outputs))
    result = EfficientPSFusion(thing_classes=net.thing_classes)(outputs)
    assert_one_object_per_square(labels, result.instances)
    assert result.classes.tolist() == [1, 1]
    background = (labels == 0) & (result.instances == 0)
    assert (result.semantic[background] == 0).mean() > 0.95  # stuff: the semantic head's background
    assert (result.instances[labels == 0] > 0).mean() < 0.05
    # segarch.predict takes the trained detector for instances (its detections as the boundary decoder's classes)
    found = segarch.predict(segarch.instances.detections.DetectionsAsClasses(net), x[0, 0].numpy(), axes="YX",
                            output="instances", decoder="boundary")
    assert_one_object_per_square(labels, found)
