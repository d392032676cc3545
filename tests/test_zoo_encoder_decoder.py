"""Structure of the encoder–decoder family against the papers (FCN, SegNet, LinkNet, FC-DenseNet, CE-Net,
FPN, RefineNet, LRR, TransUNet, LWBNA-UNet). Shapes, gradients, parameter counts and training are
covered for every registered model by tests/test_zoo_models.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segarch import zoo

pytestmark = pytest.mark.slow  # builds, runs and trains networks of the zoo


def _meta(name: str, **config):
    with torch.device("meta"):
        return zoo.create(name, **(config or zoo.card(name).paper_config))


# FCN ----------------------------------------------------------------------------------------------------


def test_fcn_variants_fuse_pool4_then_pool3_and_fc6_is_a_7x7_convolution():
    for variant, skips in (("32s", ()), ("16s", (512,)), ("8s", (512, 256))):
        net = _meta("fcn", spatial_dims=2, in_channels=3, out_channels=21, variant=variant)
        assert tuple(s.in_channels for s in net.skip_scores) == skips
        fc6, fc7 = net.fc[0], net.fc[3]
        assert fc6.kernel_size == (7, 7) and fc6.out_channels == 4096 and fc7.kernel_size == (1, 1)


@pytest.mark.parametrize("variant,dims", [("32s", 2), ("16s", 3)])
def test_fcn_coarser_variants_run_in_2d_and_3d(variant, dims):
    torch.manual_seed(0)
    config = dict(zoo.card("fcn").test_config, variant=variant)
    net = zoo.create("fcn", spatial_dims=dims, out_channels=3, **config)
    x = torch.randn(1, 1, *((32, 64, 32)[:dims] if dims == 3 else (64, 32)))
    y = net(x)
    assert y.shape == (1, 3, *x.shape[2:]) and torch.isfinite(y).all()
    assert len(net.skip_scores) == {"32s": 0, "16s": 1}[variant]


def test_fcn8s_adds_skip_scores_at_strides_16_and_8():
    torch.manual_seed(0)
    net = zoo.create("fcn", spatial_dims=2, **zoo.card("fcn").test_config).eval()
    x = torch.randn(1, 1, 64, 64)
    seen = []
    hooks = [s.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[2:]))) for s in net.skip_scores]
    base = net(x)
    for h in hooks:
        h.remove()
    assert seen == [(4, 4), (8, 8)]  # pool4 (stride 16) then pool3 (stride 8)
    # The skip scores start at zero (the paper's initialisation); a bias on pool3's score adds through.
    with torch.no_grad():
        net.skip_scores[1].bias[0] = 1.0
    shifted = net(x)
    assert torch.allclose(shifted[:, 0] - base[:, 0], torch.ones(1, 64, 64), atol=1e-4)
    assert torch.allclose(shifted[:, 1], base[:, 1], atol=1e-5)


# SegNet -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_segnet_unpools_with_the_encoders_argmax_indices(dims):
    torch.manual_seed(0)
    net = zoo.create("segnet", spatial_dims=dims, width_scale=0.0625).eval()
    x = torch.randn(1, 1, *((32,) * dims))
    before = net.encoder.blocks[0](x)  # block 1's features before its pooling
    pooled, indices, shape = net.encoder(x)[0]
    sparse = net.unpool(pooled, indices, output_size=shape[2:])
    # Every pooled maximum returns to where it was, and everything else is zero.
    window_max = nn.functional.max_pool2d if dims == 2 else nn.functional.max_pool3d
    flat_before = before.flatten(2)
    assert torch.equal(flat_before.gather(2, indices.flatten(2)), pooled.flatten(2))
    assert torch.equal(window_max(before, 2), pooled)
    assert (sparse != 0).sum() <= pooled.numel()
    assert torch.equal(sparse.flatten(2).gather(2, indices.flatten(2)), pooled.flatten(2))
    # No encoder features are concatenated: the decoder's first stage sees only the unpooled bottleneck.
    first = net.decoder[0][0].conv
    assert first.in_channels == net.encoder.out_channels[-1]


def test_segnet_has_13_encoder_and_13_decoder_convolutions():
    net = _meta("segnet")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 26
    assert convs[-1].out_channels == 11 and convs[-1].in_channels == 64
    from segarch.layers.exportable import MaxUnpool

    # one unpool module (nn.MaxUnpool2d's semantics, exportable to ONNX), used 5 times
    assert sum(isinstance(m, (nn.MaxUnpool2d, MaxUnpool)) for m in net.modules()) == 1


# LinkNet ------------------------------------------------------------------------------------------------


def test_linknet_adds_encoder_outputs_to_the_decoder_input():
    torch.manual_seed(0)
    net = zoo.create("linknet", spatial_dims=2, base_width=8).eval()
    seen = {}
    net.encoder.layers[2].register_forward_hook(lambda m, i, o: seen.__setitem__("e3", o))
    net.decoder[3].register_forward_hook(lambda m, i, o: seen.__setitem__("d4", o))
    net.decoder[2].register_forward_hook(lambda m, i, o: seen.__setitem__("d3_in", i[0]))
    net(torch.randn(1, 1, 64, 64))
    assert torch.allclose(seen["d3_in"], seen["d4"] + seen["e3"])  # a sum, not a concatenation
    # Decoder block (m, n): 1×1 to m/4, 3×3 full conv, 1×1 to n, at the paper's widths.
    paper = _meta("linknet")
    assert [(b.reduce.conv.in_channels, b.reduce.conv.out_channels, b.expand.conv.out_channels)
            for b in paper.decoder] == [(64, 16, 64), (128, 32, 64), (256, 64, 128), (512, 128, 256)]


# FC-DenseNet103 ("DU-Net") ------------------------------------------------------------------------------


def test_fc_densenet103_has_103_layers_growth_16_and_the_papers_blocks():
    net = _meta("fc_densenet103")
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(layers) == 103
    assert [len(b.layers) for b in net.down_blocks] == [4, 5, 7, 10, 12]
    assert len(net.bottleneck.layers) == 15
    assert [len(b.layers) for b in net.up_blocks] == [12, 10, 7, 5, 4]
    assert {layer.conv.out_channels for b in net.down_blocks for layer in b.layers} == {16}
    # Table 2's channel counts: 48 → 112 → 192 → 304 → 464 → 656 down; 256 maps reach the classifier.
    assert [b.out_channels for b in net.down_blocks] == [112, 192, 304, 464, 656]
    assert net.head.in_channels == 256
    # The up path up-samples only the previous block's new maps (15 × 16 = 240 from the bottleneck).
    assert net.ups[0].in_channels == 240 and net.up_blocks[0].layers[0].conv.in_channels == 240 + 656


def test_dense_block_concatenates_its_input_and_every_layers_maps():
    from segarch.blocks.dense import DenseBlock

    torch.manual_seed(0)
    block = DenseBlock(2, 3, layers=3, growth_rate=2, dropout=0.0).eval()
    x = torch.randn(1, 3, 8, 8)
    y = block(x)
    assert y.shape[1] == 3 + 3 * 2 and torch.equal(y[:, :3], x)  # the input passes through unchanged
    l0 = block.layers[0](x)
    assert torch.allclose(y[:, 3:5], l0)
    assert torch.allclose(y[:, 5:7], block.layers[1](torch.cat([x, l0], 1)))
    block.keep_input = False
    assert torch.allclose(block(x), y[:, 3:])


# CE-Net -------------------------------------------------------------------------------------------------


def test_cenet_dac_branches_reach_a_19_pixel_field_and_rmp_adds_four_maps():
    from segarch.blocks.dac_rmp import DenseAtrousConv, ResidualMultiKernelPool

    dac = DenseAtrousConv(2, 1)
    with torch.no_grad():
        for p in dac.parameters():
            p.copy_(torch.ones_like(p) if p.ndim > 1 else torch.zeros_like(p))
    x = torch.zeros(1, 1, 41, 41)
    x[..., 20, 20] = 1.0
    row = dac(x)[0, 0, 20].nonzero().flatten()
    assert row.min().item() == 20 - 9 and row.max().item() == 20 + 9  # rates 1, 3, 5 cascaded: 19 pixels
    rmp = ResidualMultiKernelPool(2, 8)
    y = rmp(torch.randn(1, 8, 30, 30))
    assert y.shape == (1, 12, 30, 30)
    paper = _meta("cenet")
    assert paper.rmp.out_channels == 516 and paper.decoder[3].reduce.conv.in_channels == 516
    assert [len(stage) for stage in paper.encoder.layers] == [3, 4, 6, 3]  # ResNet-34


# Semantic FPN -------------------------------------------------------------------------------------------


def test_semantic_fpn_branch_depths_and_sum_at_quarter_scale():
    paper = _meta("semantic_fpn")
    assert [len(b) for b in paper.branches] == [1, 1, 2, 3]  # P2..P5 stages to reach 1/4 scale
    assert {s.conv.out_channels for b in paper.branches for s in b} == {128}
    assert paper.branches[3][0].norm.num_groups == 32
    assert [m.out_channels for m in paper.fpn.lateral] == [256] * 4
    torch.manual_seed(0)
    net = zoo.create("semantic_fpn", spatial_dims=2, **zoo.card("semantic_fpn").test_config).eval()
    seen = []
    net.classifier.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[2:])))
    assert net(torch.randn(1, 1, 64, 96)).shape == (1, 2, 64, 96)
    assert seen == [(16, 24)]  # classes predicted at 1/4 scale, then up-sampled ×4


def test_feature_pyramid_adds_the_upsampled_coarser_level():
    from segarch.blocks.feature_pyramid import FeaturePyramid

    fpn = FeaturePyramid(2, (3, 5), channels=4)
    for out in fpn.output:  # identity smoothing, to read the merge directly
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        with torch.no_grad():
            for c in range(4):
                out.weight[c, c, 1, 1] = 1.0
    c2, c3 = torch.randn(1, 3, 8, 8), torch.randn(1, 5, 4, 4)
    p2, p3 = fpn([c2, c3])
    assert torch.allclose(p3, fpn.lateral[1](c3), atol=1e-6)
    top = fpn.lateral[1](c3).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.allclose(p2, fpn.lateral[0](c2) + top, atol=1e-6)


# RefineNet ----------------------------------------------------------------------------------------------


def test_refinenet_cascades_four_blocks_from_one_to_two_paths():
    from segarch.blocks.refine import RefineNetBlock

    paper = _meta("refinenet")
    blocks = [m for m in paper.modules() if isinstance(m, RefineNetBlock)]
    assert len(blocks) == 4
    assert paper.refine[3].fuse_coarser is None  # RefineNet-4: the 1/32 features alone
    assert [b.fuse_coarser.in_channels for b in paper.refine[:3]] == [256, 256, 512]
    assert [b.reduce.in_channels for b in paper.refine] == [256, 512, 1024, 2048]  # ResNet-101 stages
    assert not any(isinstance(m, nn.BatchNorm2d) for b in blocks for m in b.modules())  # RCUs have no BN


def test_chained_residual_pooling_sums_the_chain():
    from segarch.blocks.refine import ChainedResidualPooling

    torch.manual_seed(0)
    crp = ChainedResidualPooling(2, 3, stages=2)
    x = torch.randn(1, 3, 12, 12)
    pool = nn.functional.max_pool2d
    s1 = crp.convs[0](pool(x, 5, 1, 2))
    s2 = crp.convs[1](pool(s1, 5, 1, 2))
    assert torch.allclose(crp(x), x + s1 + s2, atol=1e-6)


# LRR ----------------------------------------------------------------------------------------------------


def test_lrr_boundary_mask_is_zero_inside_regions_and_gates_the_residual():
    from segarch.nets.lrr import boundary_mask

    logits = torch.zeros(1, 2, 32, 32)
    logits[:, 0, :, :16] = 10.0
    logits[:, 1, :, 16:] = 10.0  # class 0 left, class 1 right: one vertical boundary
    mask = boundary_mask(logits)
    assert mask[..., :11].abs().max() == 0 and mask[..., 21:].abs().max() == 0  # 9×9 window: 4 pixels each side
    assert mask[:, :, :, 12:20].min() > 0.99
    torch.manual_seed(0)
    net = zoo.create("lrr", spatial_dims=2, **zoo.card("lrr").test_config).eval()
    y = net(torch.randn(1, 1, 64, 64))
    assert [tuple(p.shape[2:]) for p in net.level_predictions] == [(8, 8), (16, 16), (32, 32), (64, 64)]
    assert torch.equal(y, net.level_predictions[-1])
    # Residuals reach the output only through the mask: with a flat coarse prediction they are ignored.
    for level in net.levels:
        nn.init.zeros_(level.coefficients.weight)
        nn.init.zeros_(level.coefficients.bias)
    with torch.no_grad():
        net.levels[0].coefficients.bias[0] = 5.0  # coarsest level: a constant, boundary-free prediction
        net.levels[1].coefficients.bias[:] = 3.0  # a finer residual that the mask must suppress in the interior
    y = net(torch.randn(1, 1, 64, 64))
    interior = net.level_predictions[0][..., 2:-2, 2:-2]
    upsampled = interior.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.allclose(net.level_predictions[1][..., 8:-8, 8:-8], upsampled[..., 4:-4, 4:-4], atol=1e-4)


def test_lrr_predicts_ten_basis_coefficients_per_class_on_four_vgg_levels():
    paper = _meta("lrr")
    assert [lvl.coefficients.in_channels for lvl in paper.levels] == [4096, 512, 512, 256]
    assert {lvl.coefficients.out_channels for lvl in paper.levels} == {210}
    assert {lvl.bases.kernel_size for lvl in paper.levels} == {(8, 8)} and paper.levels[0].bases.groups == 21


# TransUNet ----------------------------------------------------------------------------------------------


def test_transunet_is_r50_vit_b16_with_three_skips():
    paper = _meta("transunet")
    assert [len(s) for s in paper.trunk.stages] == [3, 4, 9]
    assert paper.trunk.out_channels == (64, 256, 512, 1024)
    vit = paper.transformer
    assert len(vit.layers) == 12 and vit.layers[0].attn.heads == 12
    assert vit.patch_embed.kernel_size == (1, 1) and vit.patch_embed.out_channels == 768  # 1×1 patches on 1/16
    assert vit.grid == (14, 14) and vit.pos_embed.shape == (1, 196, 768)  # 224² input, 16× down
    # Decoder inputs: upsampled map + skip at 1/8 (512), 1/4 (256), 1/2 (64), none at full resolution.
    assert [b[0].conv.in_channels for b in paper.decoder] == [512 + 512, 256 + 256, 128 + 64, 64]
    assert [b[1].conv.out_channels for b in paper.decoder] == [256, 128, 64, 16]


@pytest.mark.parametrize("dims", [2, 3])
def test_transunet_position_embeddings_follow_the_token_grid(dims):
    torch.manual_seed(0)
    net = zoo.create("transunet", spatial_dims=dims, **zoo.card("transunet").test_config).eval()
    assert net.transformer.grid == (2,) * dims  # img_size 32 → a 2^dims grid of stored embeddings
    seen = []
    net.transformer.register_forward_hook(lambda m, i, o: seen.append(tuple(o[-1].shape[2:])))
    shape = (1, 1) + ((48, 32) if dims == 2 else (32, 16, 48))  # token grids unlike the stored one
    y = net(torch.randn(shape))
    assert y.shape == (1, 2) + shape[2:] and torch.isfinite(y).all()
    assert seen == [tuple(s // 16 for s in shape[2:])]


# LWBNA-UNet ---------------------------------------------------------------------------------------------


def test_lwbna_unet_keeps_one_width_narrows_the_bottleneck_and_gates_in_half_to_one():
    from segarch.nets.lwbna_unet import HalfGateAttention

    paper = _meta("lwbna_unet")
    widths = {m.out_channels for m in paper.modules() if isinstance(m, nn.Conv2d)} - {1}
    assert widths == {64, 32, 16, 8, 4}  # 64 everywhere, narrowing only inside the bottleneck
    assert paper.bottleneck.widths == (64, 32, 16, 8, 4)
    assert all(level.conv1.conv.in_channels == 64 for level in paper.decoder)  # skips are added, not concatenated
    torch.manual_seed(0)
    attention = HalfGateAttention(6)
    for _ in range(3):
        nn.init.normal_(attention.fc.weight, std=5.0)
        gate = attention.gate(torch.randn(4, 6, 5, 5, 5))
        assert gate.min() >= 0.5 and gate.max() < 1.0 and gate.shape == (4, 6, 1, 1, 1)
