"""Structure checks against the papers: HRNet/HRNetV2, SPADE, BASNet, SETR, Swin UPerNet, HRFormer.

The shared tester (test_zoo_models.py) checks shapes, gradients, parameter counts and training for
every registered net; here we check what makes each architecture what its paper says it is.
"""

from __future__ import annotations

import pytest
import torch

from segarch import zoo
from segarch.backbones.hrnet import HighResolutionEncoder
from segarch.blocks.hr_fusion import HRFusion
from segarch.blocks.resize import resize_to

pytestmark = pytest.mark.slow  # builds, runs and trains networks of the zoo


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- HRNet


def test_hrnet_stages_have_1_2_3_4_branches_of_widths_c_2c_4c_8c():
    enc = HighResolutionEncoder(2, 1, width=4, stages="small", stem_width=8).eval()
    assert enc.branch_counts == (2, 3, 4)  # stage 1 has one branch; each transition opens one more
    assert [len(stage[0].branches) for stage in enc.stages] == [2, 3, 4]
    assert [len(stage) for stage in enc.stages] == [1, 3, 2]  # W18-Small-v2 modules per stage
    full = HighResolutionEncoder(2, 1, width=4, stages="full", stem_width=8)
    assert [len(stage) for stage in full.stages] == [1, 4, 3]  # HRNet-W48 modules per stage
    assert len(full.layer1) == 4 and len(enc.layer1) == 2
    xs = enc(torch.randn(1, 1, 64, 96))
    assert [x.shape[1] for x in xs] == [4, 8, 16, 32] == list(enc.out_channels)
    assert [tuple(x.shape[2:]) for x in xs] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert enc.reductions == (4, 8, 16, 32)


def test_hrnet_fusion_sums_every_branch_at_every_resolution():
    fusion = HRFusion(2, (3, 6)).eval()
    x0, x1 = torch.randn(1, 3, 8, 8), torch.randn(1, 6, 4, 4)
    y0, y1 = fusion([x0, x1])
    up = resize_to(fusion.transforms[0][1](x1), (8, 8))  # coarse → fine: 1x1 conv + BN, up-sampled
    torch.testing.assert_close(y0, torch.relu(x0 + up))
    down = fusion.transforms[1][0](x0)  # fine → coarse: strided 3x3 conv + BN
    assert down.shape == x1.shape
    torch.testing.assert_close(y1, torch.relu(x1 + down))


def test_hrnet_v2_head_concatenates_all_four_branches_v1_reads_only_the_first():
    v2 = zoo.create("hrnet_v2", spatial_dims=2, in_channels=1, out_channels=3,
                    **zoo.card("hrnet_v2").test_config).eval()
    v1 = zoo.create("hrnet_v1", spatial_dims=2, in_channels=1, out_channels=3,
                    **zoo.card("hrnet_v1").test_config).eval()
    x = torch.randn(1, 1, 64, 64)
    xs = v2.features(x)
    cat = v2.head_input(xs)
    assert cat.shape[1] == 4 + 8 + 16 + 32 == v2.head[0].conv.in_channels
    torch.testing.assert_close(cat[:, 4:12], resize_to(xs[1], (16, 16)))
    torch.testing.assert_close(cat[:, 28:], resize_to(xs[3], (16, 16)))
    assert len(v1.features(x)) == 1  # the last fusion only produces the high-resolution branch
    assert v1.head[0].conv.in_channels == 4
    assert len(v1.encoder.stages[-1][-1].fusion.transforms) == 1
    assert len(v2.encoder.stages[-1][-1].fusion.transforms) == 4


def test_hrnet_paper_counts():
    assert abs(zoo.parameter_count("hrnet_v2") / 1e6 - 65.9) < 0.1
    assert abs(zoo.parameter_count("hrnet_v2_w18_small") / 1e6 - 3.9) < 0.1
    assert abs(zoo.parameter_count("hrnet_w18") / 1e6 - 21.3) < 0.1
    assert abs(zoo.parameter_count("hrnet_w48") / 1e6 - 77.5) < 0.1


def test_hrnet_bad_options():
    with pytest.raises(ValueError, match="`stages` must be one of"):
        zoo.create("hrnet_v2", stages="huge")
    with pytest.raises(ValueError, match="`width` must be a positive integer"):
        zoo.create("hrnet_v2", width=0)


# --------------------------------------------------------------------------- SPADE


def test_spade_normalisation_is_parameter_free_before_a_spatial_modulation():
    from segarch.blocks.spade import SPADE

    spade = SPADE(2, channels=4, label_channels=2, hidden=8)
    assert list(spade.norm.parameters()) == []  # no affine: all scale/bias comes from the label map
    x = torch.randn(3, 4, 8, 8) * 5 + 2
    with torch.no_grad():
        for conv in (spade.gamma, spade.beta):
            conv.weight.zero_()
            conv.bias.zero_()
    out = spade(x, torch.zeros(3, 2, 8, 8))
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_spade_scale_and_bias_vary_with_the_label_map():
    from segarch.blocks.spade import SPADE

    spade = SPADE(2, channels=4, label_channels=2, hidden=8).eval()
    x = torch.randn(1, 4, 16, 16)
    left_right = torch.zeros(1, 2, 16, 16)
    left_right[:, 0, :, :8] = 1
    left_right[:, 1, :, 8:] = 1
    top_bottom = left_right.transpose(2, 3)
    gamma, beta = spade.modulation(x, left_right)
    # constant inside each region (away from the border and the boundary), different across them
    assert torch.allclose(gamma[..., 4, 2], gamma[..., 10, 4]) and torch.allclose(beta[..., 4, 2], beta[..., 10, 4])
    assert not torch.allclose(gamma[..., 4, 3], gamma[..., 4, 12])
    assert not torch.allclose(spade(x, left_right), spade(x, top_bottom))
    # a label map at another resolution is resized to the features'
    torch.testing.assert_close(spade(x, left_right),
                               spade(x, left_right.repeat_interleave(2, 2).repeat_interleave(2, 3)))


def test_spade_generator_maps_labels_to_an_image():
    entry = zoo.card("spade")
    assert "not a segmenter" in entry.full_name and "GENERATOR" in entry.notes
    gen = zoo.create("spade", spatial_dims=2, in_channels=3, out_channels=1, **entry.test_config).eval()
    labels = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 64, 64)), 3).permute(0, 3, 1, 2).float()
    image = gen(labels)
    assert image.shape == (2, 1, 64, 64)
    assert image.abs().max() <= 1  # tanh: an image in [-1, 1]
    assert not torch.allclose(gen(labels.flip(-1)), image)
    # seven SPADE ResBlks, 16nf → nf, with learned shortcuts where the width changes
    blocks = [gen.head_0, gen.middle_0, gen.middle_1, *gen.ups]
    assert [b.conv_1.out_channels if not hasattr(b.conv_1, "parametrizations") else b.conv_1.weight.shape[0]
            for b in blocks] == [32, 32, 32, 16, 8, 4, 2]
    assert [b.learned_shortcut for b in blocks] == [False] * 3 + [True] * 4
    assert hasattr(gen.head_0.conv_0, "parametrizations")  # spectral norm, as in the paper


# --------------------------------------------------------------------------- BASNet


def test_basnet_refinement_is_residual_and_deep_supervision_has_8_outputs():
    from segarch.nets.basnet import BASNet, ResidualRefinement

    rrm = ResidualRefinement(2, channels=2, width=4).eval()
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        rrm.conv_out.weight.zero_()
        rrm.conv_out.bias.zero_()
    torch.testing.assert_close(rrm(x), x)  # the RRM adds a residual to the coarse map

    net = BASNet(2, 1, 2, base_width=2, refine_width=4)
    x = torch.randn(2, 1, 64, 64)
    outs = net.forward_all(x)
    assert len(outs) == 8 and all(o.shape == (2, 2, 64, 64) for o in outs)
    assert torch.equal(net.eval()(x), net.forward_all(x)[0])
    net.train()
    sum(o.square().mean() for o in net.forward_all(x)).backward()
    assert all(p.grad is not None for p in net.parameters())  # the side heads train through forward_all
    # ResNet-34 stages (3, 4, 6, 3 blocks), the first at full resolution, then two 3-block stages at 512
    assert [len(layer) for layer in net.encoder] == [3, 4, 6, 3] and len(net.stage5) == len(net.stage6) == 3
    assert net.inconv.conv.stride == (1, 1)


# --------------------------------------------------------------------------- SETR


@pytest.mark.parametrize("decoder", ["naive", "pup", "mla"])
def test_setr_decoders_counts_and_shapes(decoder):
    from segarch.nets.setr import SETR_PAPER_PARAMS

    counted = zoo.parameter_count("setr", spatial_dims=2, in_channels=3, out_channels=19, decoder=decoder) / 1e6
    assert abs(counted - SETR_PAPER_PARAMS[decoder]) / SETR_PAPER_PARAMS[decoder] < 0.03, counted
    for dims, shape in ((2, (48, 32)), (3, (16, 32, 16))):
        net = zoo.create("setr", spatial_dims=dims, in_channels=2, out_channels=3, decoder=decoder,
                         **dict(zoo.card("setr").test_config, depth=4))
        y = net(torch.randn(2, 2, *shape))
        assert y.shape == (2, 3, *shape)
        y.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_setr_mla_aggregates_four_evenly_spaced_layers_and_position_embedding_interpolates():
    from segarch.blocks.vit import interpolate_grid

    net = zoo.create("setr", decoder="mla", embed_dim=16, depth=8, heads=2, img_size=64, decoder_channels=8)
    assert net.encoder.out_indices == (1, 3, 5, 7)
    assert len(net.encoder(torch.randn(1, 1, 32, 32))) == 4
    assert net.encoder.pos_embed.shape == (1, 16, 16)  # a 4x4 grid for 64² inputs ...
    pos = interpolate_grid(net.encoder.pos_embed, (4, 4), (4, 4))
    assert pos is net.encoder.pos_embed  # ... used as is at 64² ...
    assert interpolate_grid(net.encoder.pos_embed, (4, 4), (2, 6)).shape == (1, 12, 16)  # ... resampled otherwise
    ramp = torch.arange(4.0).repeat(4).reshape(1, 16, 1)  # a ramp along x stays a ramp
    wide = interpolate_grid(ramp, (4, 4), (4, 8)).reshape(4, 8)
    assert torch.all(wide[:, 1:] >= wide[:, :-1]) and torch.allclose(wide[0], wide[3])
    with pytest.raises(ValueError, match="`decoder` must be one of"):
        zoo.create("setr", decoder="fpn")


# --------------------------------------------------------------------------- window attention, Swin UPerNet


def _changed(attn, x, index):
    with torch.no_grad():
        y = attn(x)
        x2 = x.clone()
        x2[index] += 1.0
        return (attn(x2) - y).abs().amax(-1)[0] > 1e-6


@pytest.mark.parametrize("dims", [2, 3])
def test_window_attention_is_restricted_to_windows(dims):
    from segarch.blocks.window_attention import WindowAttention, window_partition, window_reverse

    attn = WindowAttention(dims, dim=8, heads=2, window=4)
    size = (8,) * dims
    x = torch.randn(1, *size, 8)
    changed = _changed(attn, x, (0, *(5,) * dims))  # a token in the last window
    expected = torch.zeros(size, dtype=torch.bool)
    expected[(slice(4, 8),) * dims] = True
    assert torch.equal(changed, expected)
    windows = window_partition(x, (4,) * dims)
    assert windows.shape == (2 ** dims, 4 ** dims, 8)
    assert torch.equal(window_reverse(windows, (4,) * dims, size, 1), x)


def test_shifted_windows_mask_the_seams_of_the_roll():
    from segarch.blocks.window_attention import WindowAttention

    attn = WindowAttention(2, dim=8, heads=2, window=4, shift=True)
    x = torch.randn(1, 8, 8, 8)
    changed = _changed(attn, x, (0, 0, 0))
    # rolled by 2, the corner token shares a window with rows/cols 6, 7 — which the mask keeps apart
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(changed, expected)
    changed = _changed(attn, x, (0, 3, 3))  # an interior token: the shifted window rows/cols 2..5
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert torch.equal(changed, expected)
    # sizes that are not window multiples are padded inside and cropped back
    assert attn(torch.randn(2, 5, 11, 8)).shape == (2, 5, 11, 8)


def test_swin_stages_widths_strides_and_alternating_shifts():
    net = zoo.create("swin_upernet", **zoo.card("swin_upernet").test_config)
    feats = net.encoder(torch.randn(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    shifts = [block.attn.shift for block in net.encoder.stages[2]]
    assert shifts == [False, True]
    assert abs(zoo.parameter_count("swin_upernet") / 1e6 - 59.0) < 0.1  # Swin-T 27.52M + UPerNet 31.5M


# --------------------------------------------------------------------------- HRFormer


def test_hrformer_is_hrnet_with_window_transformer_blocks():
    from segarch.blocks.window_attention import WindowAttention
    from segarch.nets.hrformer import HRFormer, HRFormerBlock

    net = HRFormer(2, 1, 2, variant="small", width=4, heads=(1, 1, 2, 2), window=4, stem_width=8)
    assert [len(stage) for stage in net.encoder.stages] == [1, 4, 2]  # modules in stages 2, 3, 4
    assert len(net.encoder.layer1) == 2
    block = net.encoder.stages[1][0].branches[2][0]
    assert isinstance(block, HRFormerBlock) and isinstance(block.attn, WindowAttention)
    assert block.attn.window == (4, 4) and not block.attn.shift and block.attn.attn.heads == 2
    depthwise = block.ffn[1].conv
    assert depthwise.groups == depthwise.in_channels == 64  # 16 channels, 4x MLP with a 3x3 depth-wise convolution
    step = net.encoder.stages[2][0].fusion.transforms[3][0][0]  # branch 0 -> 3, first strided step
    assert step[0].conv.groups == 4 and step[1].conv.kernel_size == (1, 1)  # depth-wise separable fusion
    xs = net.encoder(torch.randn(1, 1, 64, 64))
    assert [x.shape[1] for x in xs] == [4, 8, 16, 32]
    y = net(torch.randn(2, 1, 64, 64))
    assert y.shape == (2, 2, 64, 64)
    # the FFN's depth-wise convolution is what links windows: a token moves outputs beyond its window
    x = torch.randn(1, 4, 8, 8)
    block = HRFormerBlock(2, 4, heads=1, window=4).eval()
    with torch.no_grad():
        x2 = x.clone()
        x2[0, :, 0, 0] += torch.tensor([1.0, -2.0, 0.5, 3.0])  # not a constant shift, which LayerNorm removes
        changed = (block(x2) - block(x)).abs().amax(1)[0] > 1e-6
    assert changed[:4, :4].all() and changed[4, 0] and not changed[6:, 6:].any()


def test_hrformer_paper_widths_and_counts():
    from segarch.nets.hrformer import HRFORMER_VARIANTS

    assert HRFORMER_VARIANTS == {"small": (32, (1, 2, 4, 8)), "base": (78, (2, 4, 8, 16))}
    # The segmentation networks (the cards' configuration): HRFormer + OCR, Cityscapes' 19 classes.
    assert abs(zoo.parameter_count("hrformer_small") / 1e6 - 13.5) < 0.05
    assert abs(zoo.parameter_count("hrformer_base") / 1e6 - 56.2) < 0.25
    # The pose networks of the paper's COCO table: a 1x1 layer to 17 keypoint maps on the high-resolution branch.
    for name, figure in (("hrformer_small", 7.8), ("hrformer_base", 43.2)):
        pose = {**zoo.card(name).paper_config, "head": "v1", "out_channels": 17}
        assert abs(zoo.parameter_count(name, **pose) / 1e6 - figure) < 0.1


def test_hrformer_and_hrnet_ocr_heads_follow_the_authors_layer_sizes():
    with torch.device("meta"):
        hrformer = zoo.create("hrformer_base", **zoo.card("hrformer_base").paper_config)
        hrnet = zoo.create("hrnet_ocr", **zoo.card("hrnet_ocr").paper_config)
    # HRFormer-B: 78+156+312+624 = 1170 channels; soft regions from a 3x3 conv to 512 (HRFormer's OCR head).
    aux = hrformer.head.soft_regions[0].conv
    assert aux.in_channels == 1170 and aux.kernel_size == (3, 3) and aux.out_channels == 512
    # HRNetV2-W48: 48+96+192+384 = 720 channels; soft regions from a 1x1 conv keeping 720 (HRNet-OCR's head).
    aux = hrnet.head.soft_regions[0].conv
    assert aux.in_channels == 720 and aux.kernel_size == (1, 1) and aux.out_channels == 720
    for net in (hrformer, hrnet):
        assert net.head.pixels.conv.kernel_size == (3, 3) and net.head.pixels.conv.out_channels == 512
        assert net.head.pixels.conv.bias is not None  # the authors' 3x3 convolution keeps its bias before BN
        assert net.head.ocr.key_channels == 256 and net.head.classifier.out_channels == 19
    assert abs(zoo.parameter_count("hrnet_ocr") / 1e6 - 70.3) < 0.1


@pytest.mark.parametrize("name", ["hrnet_ocr", "hrformer_small"])
def test_ocr_nets_keep_soft_region_logits_for_the_auxiliary_loss_in_training(name):
    torch.manual_seed(0)
    net = zoo.create(name, spatial_dims=2, in_channels=1, out_channels=3, **zoo.card(name).test_config)
    x = torch.randn(2, 1, 64, 32)
    y = net.train()(x)
    assert y.shape == net.aux_logits.shape == (2, 3, 64, 32)
    (y.square().mean() + 0.4 * net.aux_logits.square().mean()).backward()
    assert all(p.grad is not None for p in net.head.soft_regions.parameters())
    net.eval()
    with torch.no_grad():
        net(x)
    assert net.aux_logits is None
