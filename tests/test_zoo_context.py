"""Structure checks of the context and attention networks against their papers.

The shared tester (``test_zoo_models.py``) runs shapes, gradients, parameter counts and training for
every registered net; these tests check what makes each architecture itself (rates, bins, attention
footprints), with values.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segarch import zoo
from segarch.blocks.aspp import ASPP, DenseASPP, ImagePooling
from segarch.blocks.pyramid_pooling import PyramidPooling

pytestmark = pytest.mark.slow  # builds, runs and trains networks of the zoo


def _paper_net(name: str):
    """The paper configuration, built on the meta device (no memory)."""
    with torch.device("meta"):
        return zoo.create(name, **zoo.card(name).paper_config)


def _dilations(module: nn.Module) -> list[int]:
    return [m.dilation[0] for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.kernel_size[0] == 3]


# --- ASPP and the DeepLabs ---------------------------------------------------------------------------


def test_deeplab_v2_aspp_is_four_summed_classifiers_at_rates_6_12_18_24():
    net = _paper_net("deeplab_v2")
    aspp = net.aspp
    assert aspp.fusion == "sum" and aspp.rates == (6, 12, 18, 24)
    assert [b.dilation[0] for b in aspp.branches] == [6, 12, 18, 24]
    assert all(b.in_channels == 2048 and b.out_channels == 21 for b in aspp.branches)
    # The output is the sum of the branches' class scores.
    torch.manual_seed(0)
    small = ASPP(2, 4, 3, rates=(1, 2), fusion="sum")
    x = torch.randn(1, 4, 9, 9)
    assert torch.allclose(small(x), small.branches[0](x) + small.branches[1](x), atol=1e-6)


@pytest.mark.parametrize("name", ["deeplab_v3", "deeplab_v3_plus"])
def test_deeplab_v3_aspp_has_1x1_three_atrous_and_image_pooling(name):
    net = _paper_net(name)
    aspp = net.aspp
    assert aspp.rates == (6, 12, 18) and aspp.image_pooling
    assert len(aspp.branches) == 5 and isinstance(aspp.branches[-1], ImagePooling)
    assert aspp.branches[0].conv.kernel_size == (1, 1)
    assert [_dilations(b) for b in aspp.branches[1:4]] == [[6], [12], [18]]
    assert aspp.project.conv.in_channels == 5 * 256 and aspp.project.conv.out_channels == 256
    assert net.encoder.reductions[-1] == 16
    # The rates double at output stride 8, as the paper does.
    with torch.device("meta"):
        assert zoo.create(name, in_channels=3, out_channels=21, output_stride=8).aspp.rates == (12, 24, 36)


def test_image_pooling_branch_is_constant_over_space():
    torch.manual_seed(0)
    branch = ImagePooling(3, 4, 2).eval()
    out = branch(torch.randn(2, 4, 3, 5, 6))
    assert out.shape == (2, 2, 3, 5, 6)
    assert torch.allclose(out, out[..., :1, :1, :1].expand_as(out))


@pytest.mark.parametrize("backbone", ["xception65", "xception71", "resnet"])
def test_deeplab_v3_plus_decoder_reads_stride_4_features_reduced_to_48(backbone):
    with torch.device("meta"):
        net = zoo.create("deeplab_v3_plus", **{**zoo.card("deeplab_v3_plus").paper_config, "backbone": backbone})
    assert net.encoder.reductions[1] == 4
    assert net.reduce.conv.in_channels == net.encoder.out_channels[1] == 256
    assert net.reduce.conv.out_channels == 48
    convs = [[m for m in c.modules() if isinstance(m, nn.Conv2d)] for c in net.decoder]
    assert len(net.decoder) == 2 and convs[0][0].in_channels == 256 + 48
    if backbone == "resnet":  # the Sec. 4.1 model: plain 3x3 convolutions
        assert all(len(c) == 1 and c[0].kernel_size == (3, 3) for c in convs)
    else:  # the paper's best models: depthwise 3x3 then pointwise 1x1, each with BN
        assert all([m.kernel_size for m in c] == [(3, 3), (1, 1)] and c[0].groups == c[0].in_channels for c in convs)
        assert all(len([m for m in c.modules() if isinstance(m, nn.BatchNorm2d)]) == 2 for c in net.decoder)


@pytest.mark.parametrize("depth", [65, 71])
def test_aligned_xception_has_its_named_number_of_3x3_layers(depth):
    from segarch.backbones.aligned_xception import AlignedXceptionEncoder

    with torch.device("meta"):
        encoder = AlignedXceptionEncoder(2, 3, depth=depth)
    three = [m for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(three) == depth  # 2 root convolutions + 3 depthwise per unit (entry, 16 middle, 2 exit)
    depthwise = [m for m in three if m.groups > 1]
    assert len(depthwise) == depth - 2 and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    # Max-pooling is replaced by strided separable convolutions: no pooling layer at all.
    assert not [m for m in encoder.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert encoder.out_channels[-1] == 2048 and len(encoder.units) == (3 if depth == 65 else 5) + 16 + 2


def test_deeplab_v3_plus_xception_counts_match_the_published_cityscapes_figure():
    card = zoo.card("deeplab_v3_plus")
    # Auto-DeepLab (arXiv:1901.02985) gives 43.48M for DeepLab v3+ (Xception-71, Cityscapes, 19 classes).
    x71 = zoo.parameter_count("deeplab_v3_plus", **{**card.paper_config, "backbone": "xception71", "out_channels": 19})
    assert abs(x71 / 1e6 - 43.48) < 0.01
    assert abs(zoo.parameter_count("deeplab_v3_plus") / 1e6 - 41.06) < 0.01
    resnet = {**card.paper_config, "backbone": "resnet"}
    assert abs(zoo.parameter_count("deeplab_v3_plus", **resnet) / 1e6 - 59.34) < 0.01
    assert abs(zoo.parameter_count("deeplab_v3_plus", **resnet, separable=True) / 1e6 - 45.69) < 0.01


def test_deeplab_v3_plus_output_stride_8_dilates_the_exit_flow():
    torch.manual_seed(0)
    config = {k: v for k, v in zoo.card("deeplab_v3_plus").test_config.items() if k != "rates"}
    net = zoo.create("deeplab_v3_plus", in_channels=1, out_channels=2, output_stride=8, **config).eval()
    assert net.aspp.rates == (12, 24, 36) and net.encoder.reductions[-1] == 8
    with torch.no_grad():
        features = net.encoder(torch.randn(1, 1, 64, 48))
    assert [tuple(f.shape[2:]) for f in features] == [(16, 12), (16, 12), (8, 6), (8, 6), (8, 6)]
    rates = [_dilations(unit) for unit in net.encoder.units]
    assert rates[2] == [1, 1, 1] and rates[3] == [2, 2, 2] and rates[-1] == [4, 4, 4]


def test_deeplab_v3_plus_options_of_the_other_backbone_are_refused():
    with pytest.raises(ValueError, match=r"`depth`=50 does not apply to backbone='xception65'.*width, middle_units"):
        zoo.create("deeplab_v3_plus", depth=50)
    with pytest.raises(ValueError, match=r"`middle_units`=8 does not apply to backbone='resnet'"):
        zoo.create("deeplab_v3_plus", backbone="resnet", middle_units=8)
    with pytest.raises(ValueError, match="`backbone` must be one of"):
        zoo.create("deeplab_v3_plus", backbone="xception41")


# --- PSPNet --------------------------------------------------------------------------------------------


def test_pspnet_pyramid_bins_are_1_2_3_6_with_quarter_channels():
    net = _paper_net("pspnet")
    ppm = net.ppm
    assert ppm.bins == (1, 2, 3, 6)
    assert [level[0].output_size for level in ppm.levels] == [1, 2, 3, 6]
    assert all(level[1].conv.out_channels == 512 for level in ppm.levels)
    assert ppm.out_channels == 2048 + 4 * 512 and net.encoder.reductions[-1] == 8


def test_pyramid_level_is_piecewise_constant_before_upsampling():
    # Each level sees bin averages: a level of b bins pools a 6x6 map into b x b means.
    torch.manual_seed(0)
    ppm = PyramidPooling(2, 4, bins=(1, 2, 3, 6)).eval()
    x = torch.randn(1, 4, 6, 6)
    for b, level in zip(ppm.bins, ppm.levels):
        pooled = level[0](x)
        assert pooled.shape[2:] == (b, b)
        k = 6 // b
        expected = x.unfold(2, k, k).unfold(3, k, k).mean((-1, -2))
        assert torch.allclose(pooled, expected, atol=1e-6)


def test_pspnet_auxiliary_head_is_training_only():
    torch.manual_seed(0)
    net = zoo.create("pspnet", spatial_dims=2, in_channels=1, out_channels=3, aux_head=True,
                     **zoo.card("pspnet").test_config)
    x = torch.randn(2, 1, 32, 32)
    net(x)
    assert net.aux_logits.shape == (2, 3, 32, 32)
    net.eval()
    net(x)
    assert net.aux_logits is None


# --- DANet -----------------------------------------------------------------------------------------------


def test_danet_channel_attention_is_a_c_by_c_affinity_mixing_channels():
    from segarch.blocks.self_attention import ChannelAttention

    torch.manual_seed(0)
    cam = ChannelAttention()
    cam.gamma.data.fill_(1.0)
    x = torch.randn(2, 5, 4, 6)
    out = cam(x)
    a = cam.attention
    assert a.shape == (2, 5, 5)
    assert torch.allclose(a.sum(-1), torch.ones(2, 5), atol=1e-6)
    # Every output channel map is its input plus a convex combination of all input channel maps.
    expected = x + torch.einsum("bij,bjhw->bihw", a, x)
    assert torch.allclose(out, expected, atol=1e-5)
    assert list(cam.parameters()) == [cam.gamma]  # no convolutions: only the scale is learned


def test_danet_position_attention_is_an_n_by_n_affinity_and_starts_as_identity():
    from segarch.blocks.self_attention import PositionAttention

    torch.manual_seed(0)
    pam = PositionAttention(3, 16)
    x = torch.randn(1, 16, 2, 3, 4)
    assert torch.equal(pam(x), x)  # gamma = 0 at initialisation
    assert pam.attention.shape == (1, 24, 24)
    assert pam.query.out_channels == pam.key.out_channels == 2  # C / 8
    net = _paper_net("danet")
    assert net.position_in.conv.out_channels == net.channel_in.conv.out_channels == 512
    assert net.encoder.reductions[-1] == 8


# --- CCNet ---------------------------------------------------------------------------------------------


def _footprint(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """Which input positions the output at the centre position depends on (via gradients)."""
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    centre = tuple(s // 2 for s in shape[2:])
    (grad,) = torch.autograd.grad(module(x)[(0, slice(None)) + centre].sum(), x)
    return grad[0].abs().sum(0) > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_criss_cross_attention_sees_only_the_axis_lines_after_one_pass(dims):
    from segarch.blocks.self_attention import CrissCrossAttention

    cca = CrissCrossAttention(dims, 16)
    cca.gamma.data.fill_(1.0)
    shape = (1, 16, 5, 6) if dims == 2 else (1, 16, 4, 5, 6)
    seen = _footprint(cca, shape)
    centre = tuple(s // 2 for s in shape[2:])
    grids = torch.meshgrid(*[torch.arange(s) for s in shape[2:]], indexing="ij")
    off_axis = torch.stack([g != c for g, c in zip(grids, centre)]).sum(0)  # axes on which a position differs
    assert torch.equal(seen, off_axis <= 1)  # exactly the lines through the centre


def test_criss_cross_attention_reaches_the_whole_image_after_two_passes():
    from segarch.blocks.self_attention import RecurrentCrissCrossAttention

    rcca = RecurrentCrissCrossAttention(2, 16, recurrence=2)
    rcca.attention.gamma.data.fill_(1.0)
    assert _footprint(rcca, (1, 16, 5, 6)).all()
    # In 3D two passes reach the three axis planes through the voxel, three passes the whole volume.
    rcca3 = RecurrentCrissCrossAttention(3, 16, recurrence=2)
    rcca3.attention.gamma.data.fill_(1.0)
    shape = (1, 16, 4, 5, 6)
    grids = torch.meshgrid(*[torch.arange(s) for s in shape[2:]], indexing="ij")
    off_axis = torch.stack([g != s // 2 for g, s in zip(grids, shape[2:])]).sum(0)
    assert torch.equal(_footprint(rcca3, shape), off_axis <= 2)
    rcca3.recurrence = 3
    assert _footprint(rcca3, (1, 16, 4, 5, 6)).all()


def test_criss_cross_attention_weights_sum_to_one_over_the_cross():
    # With values equal to a constant, the output is that constant whatever the energies (one softmax).
    from segarch.blocks.self_attention import CrissCrossAttention

    torch.manual_seed(0)
    cca = CrissCrossAttention(3, 8)
    cca.gamma.data.fill_(1.0)
    nn.init.zeros_(cca.value.weight)
    nn.init.constant_(cca.value.bias, 2.0)
    x = torch.randn(1, 8, 3, 4, 5)
    assert torch.allclose(cca(x) - x, torch.full_like(x, 2.0), atol=1e-5)
    net = _paper_net("ccnet")
    assert net.rcca.recurrence == 2 and net.bottleneck.conv.in_channels == 2048 + 512


# --- OCRNet --------------------------------------------------------------------------------------------


def test_ocr_region_representations_are_softmax_weighted_means_of_pixels():
    from segarch.blocks.object_context import SpatialGather

    torch.manual_seed(0)
    features, regions = torch.randn(2, 4, 3, 5), torch.randn(2, 3, 3, 5)
    reps = SpatialGather()(features, regions)
    assert reps.shape == (2, 4, 3)  # (B, C, K): one representation per soft object region
    w = torch.softmax(regions.flatten(2), -1)
    assert torch.allclose(reps[1, :, 2], (features[1].flatten(1) * w[1, 2]).sum(-1), atol=1e-6)
    # A region that is sharply one pixel represents that pixel.
    sharp = torch.full((1, 1, 3, 5), -1e4)
    sharp[0, 0, 1, 2] = 1e4
    assert torch.allclose(SpatialGather()(features[:1], sharp)[0, :, 0], features[0, :, 1, 2])


def test_ocr_pixel_region_relation_is_a_softmax_over_the_k_regions():
    torch.manual_seed(0)
    net = zoo.create("ocrnet", spatial_dims=3, in_channels=1, out_channels=3, **zoo.card("ocrnet").test_config)
    x = torch.randn(2, 1, 16, 16, 24)
    out = net(x)
    relation = net.ocr.relation
    assert relation.shape == (2, 2 * 2 * 3, 3)  # (B, pixels of the stride-8 map, K = classes)
    assert torch.allclose(relation.sum(-1), torch.ones(2, 12), atol=1e-5)
    assert net.aux_logits.shape == out.shape  # soft object regions, supervised in training
    paper = _paper_net("ocrnet")
    assert paper.soft_regions.conv.conv.in_channels == 1024 and paper.pixels.conv.out_channels == 512


# --- DRN -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["drn_c_26", "drn_d_22", "drn_d_105"])
def test_drn_levels_dilate_2_4_then_degrid_2_1_at_output_stride_8(name):
    from segarch.backbones.resnet import BasicBlock, Bottleneck

    net = _paper_net(name)
    levels = list(net.levels)[1:]  # after the 7x7 stem: the paper's eight levels
    assert len(levels) == 8
    assert [set(_dilations(level)) for level in levels[4:]] == [{2}, {4}, {2}, {1}]
    strides = [m.stride[0] for m in net.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    assert strides and all(s == 2 for s in strides)
    residual = [any(isinstance(m, (BasicBlock, Bottleneck)) for m in level.modules()) for level in levels]
    if name == "drn_c_26":
        assert residual == [True] * 6 + [False, False]  # degridding levels without residual connections
    else:
        assert residual == [False, False] + [True] * 4 + [False, False]  # D: plain convolutions in levels 1, 2, 7, 8
    assert net.classifier.in_channels == 512


def test_drn_output_stride_is_8():
    torch.manual_seed(0)
    net = zoo.create("drn_d_22", spatial_dims=2, in_channels=1, out_channels=2, **zoo.card("drn_d_22").test_config)
    assert net.levels(torch.zeros(1, 1, 48, 64)).shape[2:] == (6, 8)


# --- DenseASPP and the DenseNet encoder -------------------------------------------------------------


def test_dense_aspp_layers_see_the_input_and_every_earlier_layer():
    net = _paper_net("dense_aspp")
    aspp = net.aspp
    assert aspp.rates == (3, 6, 12, 18, 24)
    assert [layer.conv2.dilation[0] for layer in aspp.layers] == [3, 6, 12, 18, 24]
    assert [layer.conv1.in_channels for layer in aspp.layers] == [1104 + 128 * i for i in range(5)]
    assert all(layer.conv1.out_channels == 512 and layer.conv2.out_channels == 128 for layer in aspp.layers)
    assert net.classifier.in_channels == 1104 + 5 * 128
    assert net.encoder.out_channels[-1] == 2208 and net.encoder.reductions[-1] == 8
    # The input passes through and each layer appends its channels; the last layer reads the first one's output.
    torch.manual_seed(0)
    block = DenseASPP(2, 4, 4, 2, rates=(1, 2, 3)).eval()
    x = torch.randn(1, 4, 9, 9)
    out = block(x)
    assert out.shape[1] == 4 + 3 * 2 and torch.equal(out[:, :4], x)
    first = block.layers[0](x)
    assert torch.allclose(out[:, 4:6], first, atol=1e-6)
    nudged = block.layers[2](torch.cat([x, first + 1.0, out[:, 6:8]], dim=1))
    assert not torch.allclose(nudged, out[:, 8:10])


def test_densenet_encoder_widths_and_dilated_strides():
    from segarch.backbones.densenet import DenseNetEncoder

    with torch.device("meta"):
        plain = DenseNetEncoder(2, 3, depth=121)
        dilated = DenseNetEncoder(2, 3, depth=161, output_stride=8)
    assert plain.out_channels == (64, 256, 512, 1024, 1024) and plain.reductions == (2, 4, 8, 16, 32)
    assert dilated.out_channels == (96, 384, 768, 2112, 2208) and dilated.reductions == (2, 4, 8, 8, 8)
    assert set(_dilations(dilated.blocks[2])) == {2} and set(_dilations(dilated.blocks[3])) == {4}


# --- CPNet ---------------------------------------------------------------------------------------------


def test_cpnet_aggregation_paths_are_axis_wise_depthwise_in_opposite_orders():
    net = _paper_net("cpnet")
    agg = net.aggregation
    assert [m.kernel_size for m in agg.forward_path] == [(11, 1), (1, 11)]
    assert [m.kernel_size for m in agg.reverse_path] == [(1, 11), (11, 1)]
    assert all(m.groups == 512 for m in list(agg.forward_path) + list(agg.reverse_path))
    assert net.prior_conv.conv.out_channels == 64 * 64  # one affinity channel per prior-grid position
    from segarch.nets.cpnet import AggregationModule

    agg3 = AggregationModule(3, 4, 4, kernel_size=5)
    assert [m.kernel_size for m in agg3.forward_path] == [(5, 1, 1), (1, 5, 1), (1, 1, 5)]


def test_cpnet_context_prior_is_an_n_by_n_affinity_and_intra_plus_inter_is_the_mean():
    torch.manual_seed(0)
    net = zoo.create("cpnet", spatial_dims=2, in_channels=1, out_channels=3, **zoo.card("cpnet").test_config)
    net(torch.randn(2, 1, 40, 48))  # a 5x6 map, resampled to the 4x4 prior grid
    prior = net.context_prior
    assert prior.shape == (2, 16, 16) and ((prior > 0) & (prior < 1)).all()
    # P and 1 - P split every value: intra- plus inter-class context (the inputs of their 1x1 convolutions)
    # is the mean of the values over the prior grid, the same at every position.
    seen = {}
    hooks = [getattr(net, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0]))
             for name in ("intra_conv", "inter_conv")]
    net(torch.randn(2, 1, 40, 48))
    for h in hooks:
        h.remove()
    total = seen["intra_conv"] + seen["inter_conv"]
    assert total.shape == (2, 8, 4, 4)
    assert torch.allclose(total, total.mean((2, 3), keepdim=True).expand_as(total), atol=1e-5)
    assert not torch.allclose(seen["intra_conv"], seen["intra_conv"].mean((2, 3), keepdim=True).expand_as(total))
    net.eval()
    net(torch.randn(1, 1, 32, 32))
    assert net.context_prior is None


# --- ACFNet ("AC-Net") -----------------------------------------------------------------------------------


def test_acfnet_class_centers_are_probability_weighted_means_and_positions_mix_them():
    from segarch.nets.acfnet import AttentionalClassFeature

    torch.manual_seed(0)
    acf = AttentionalClassFeature(2, 4, 4).eval()
    nn.init.eye_(acf.reduce.conv.weight[..., 0, 0])  # make the reduction an identity up to BN
    features = torch.rand(1, 4, 3, 4)
    # A coarse map sure of class 0 on the left half, class 1 on the right half.
    coarse = torch.full((1, 2, 3, 4), -50.0)
    coarse[0, 0, :, :2] = 50.0
    coarse[0, 1, :, 2:] = 50.0
    acf(features, coarse)
    reduced = acf.reduce(features)
    assert torch.allclose(acf.centers[0, 0], reduced[0, :, :, :2].mean((1, 2)), atol=1e-5)
    assert torch.allclose(acf.centers[0, 1], reduced[0, :, :, 2:].mean((1, 2)), atol=1e-5)
    paper = _paper_net("acfnet")
    assert paper.aspp.rates == (12, 24, 36) and not paper.aspp.image_pooling
    assert paper.classifier.conv.conv.in_channels == 2 * 512  # ASPP features + attentional class features


# --- AttaNet ("AF-Net") --------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_strip_attention_attends_to_vertical_strips(dims):
    from segarch.blocks.self_attention import StripAttention

    torch.manual_seed(0)
    sam = StripAttention(dims, 8, key_channels=4).eval()
    shape = (2, 8, 5, 6) if dims == 2 else (2, 8, 3, 5, 6)
    x = torch.randn(*shape)
    out = sam(x)
    strips = 6 if dims == 2 else 3 * 6  # W columns (D x W in 3D): H is averaged away
    n = x[0, 0].numel()
    assert sam.attention.shape == (2, n, strips)
    assert torch.allclose(sam.attention.sum(-1), torch.ones(2, n), atol=1e-5)
    # The added context is the attention-weighted mix of the H-averaged values.
    strip_values = sam.value(x).mean(dims).flatten(2)
    expected = x + torch.einsum("bns,bcs->bcn", sam.attention, strip_values).reshape(x.shape)
    assert torch.allclose(out, expected, atol=1e-5)


def test_attanet_fusion_weight_is_channelwise_in_0_1_and_fuses_stride_16_and_32():
    torch.manual_seed(0)
    net = zoo.create("attanet", spatial_dims=2, in_channels=1, out_channels=2, **zoo.card("attanet").test_config)
    net(torch.randn(2, 1, 64, 96))
    alpha = net.afm.alpha
    assert alpha.shape == (2, 8, 1, 1) and ((alpha > 0) & (alpha < 1)).all()
    assert net.encoder.reductions[3:] == (16, 32)
    paper = _paper_net("attanet")
    assert paper.afm.low.conv.in_channels == 256 and paper.afm.high.conv.in_channels == 512


# --- Batch size 1 (pooled branches) ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["deeplab_v3", "deeplab_v3_plus", "pspnet", "attanet"])
def test_nets_with_globally_pooled_branches_train_at_batch_size_1_in_3d(name):
    torch.manual_seed(0)
    net = zoo.create(name, spatial_dims=3, in_channels=1, out_channels=2, **zoo.card(name).test_config)
    x = torch.randn(1, 1, 32, 64, 64)  # the trunk's own stride-32 map keeps 4 values per channel
    loss = net(x).square().mean()
    loss.backward()
    assert torch.isfinite(loss)


def test_pooled_batch_norm_is_batch_norm_unless_a_channel_has_one_value():
    from segarch.blocks.pooled_conv import PooledBatchNorm

    torch.manual_seed(0)
    ours, reference = PooledBatchNorm(3), nn.BatchNorm3d(3)
    x = torch.randn(2, 3, 2, 2, 2)
    assert torch.allclose(ours(x), reference(x), atol=1e-6)
    assert torch.allclose(ours.running_mean, reference.running_mean)
    single = torch.randn(1, 3, 1, 1, 1)
    before = ours.running_mean.clone()
    expected = (single - before.view(1, 3, 1, 1, 1)) / torch.sqrt(ours.running_var.view(1, 3, 1, 1, 1) + ours.eps)
    assert torch.allclose(ours(single), expected, atol=1e-5)
    assert torch.equal(ours.running_mean, before)  # nothing learned from a single value


def test_deeplab_v3_block4_uses_multi_grid_rates_2_4_8_at_output_stride_16():
    net = _paper_net("deeplab_v3")
    block4 = net.encoder.layers[-1]
    assert [unit.conv2.conv.dilation[0] for unit in block4] == [2, 4, 8]
    assert [unit.conv2.conv.padding[0] for unit in block4] == [2, 4, 8]
    with torch.device("meta"):
        plain = zoo.create("deeplab_v3", in_channels=3, out_channels=21, multi_grid=None)
    assert [unit.conv2.conv.dilation[0] for unit in plain.encoder.layers[-1]] == [2, 2, 2]
    # The rates change the receptive field, not the shape: a 3D forward keeps the stride-16 grid.
    torch.manual_seed(0)
    small = zoo.create("deeplab_v3", spatial_dims=3, in_channels=1, out_channels=2,
                       **zoo.card("deeplab_v3").test_config)
    assert [set(_dilations(unit)) for unit in small.encoder.layers[-1]] == [{4}, {8}]
    assert small.encoder(torch.zeros(1, 1, 16, 16, 32))[-1].shape[2:] == (2, 2, 4)


def test_pspnet_deep_stem_is_three_3x3_convolutions_64_64_128():
    net = _paper_net("pspnet")
    stem = net.encoder.stem
    assert [(c.conv.in_channels, c.conv.out_channels, c.conv.kernel_size, c.conv.stride) for c in stem] == [
        (3, 64, (3, 3), (2, 2)), (64, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1))]
    assert net.encoder.layers[0][0].conv1.conv.in_channels == 128 and net.encoder.out_channels[0] == 128
    torch.manual_seed(0)
    small = zoo.create("pspnet", spatial_dims=3, in_channels=2, out_channels=2, **zoo.card("pspnet").test_config)
    features = small.encoder(torch.zeros(1, 2, 16, 16, 16))
    assert [f.shape[2:] for f in features] == [(8, 8, 8), (4, 4, 4), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert features[0].shape[1] == 8  # 2 x the test's base width 4
