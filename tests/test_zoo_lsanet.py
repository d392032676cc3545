"""LSANet (the zoo's reading of "LSA-Net") and the space-to-depth block it shares with DeeperLab."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segarch import zoo
from segarch.blocks.space_to_depth import depth_to_space, space_to_depth
from segarch.nets.lsanet import ImprovedUpsampling, LightweightSelfAttention

pytestmark = pytest.mark.slow  # builds, runs and trains networks of the zoo


def test_space_to_depth_is_pixel_unshuffle_in_2d_and_invertible_in_3d():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 12)
    assert torch.equal(space_to_depth(x, 2), F.pixel_unshuffle(x, 2))
    assert torch.equal(depth_to_space(space_to_depth(x, 4), 4), x)
    y = torch.randn(2, 8, 5, 3)
    assert torch.equal(depth_to_space(y, 2), F.pixel_shuffle(y, 2))
    z = torch.randn(1, 2, 4, 6, 8)
    packed = space_to_depth(z, 2)
    assert packed.shape == (1, 16, 2, 3, 4)
    assert torch.equal(depth_to_space(packed, 2), z)
    # channel c*8 + (i*4 + j*2 + k) holds offset (i, j, k) of channel c
    assert torch.equal(packed[:, 1 * 8 + 5], z[:, 1, 1::2, 0::2, 1::2])


def test_space_to_depth_errors_name_the_block_and_sizes():
    with pytest.raises(ValueError, match=r"multiples of `block`=4, got \(6, 8\)"):
        space_to_depth(torch.zeros(1, 1, 6, 8), 4)
    with pytest.raises(ValueError, match=r"multiple of `block`\*\*2=4, got 6"):
        depth_to_space(torch.zeros(1, 6, 2, 2), 2)
    with pytest.raises(ValueError, match="`block` must be a positive integer"):
        space_to_depth(torch.zeros(1, 1, 4, 4), 0)


@pytest.mark.parametrize("dims,cells", [(2, 1 + 9 + 36 + 64), (3, 1 + 27 + 216 + 512)])
def test_lsam_attends_to_a_compact_pyramid_of_pooled_cells(dims, cells):
    torch.manual_seed(0)
    module = LightweightSelfAttention(dims, 16).eval()
    assert module.position.shape == (1, 4, cells)  # the position information of the pooled cells
    shape = (24, 24) if dims == 2 else (8, 8, 8)
    x = torch.randn(1, 16, *shape)
    with torch.no_grad():
        y = module(x)
        # every output position sees the whole map: a change in one corner moves the far corner's output
        x2 = x.clone()
        x2[(0, slice(None)) + (0,) * dims] += 5.0
        far = (0, slice(None)) + (-1,) * dims
        assert (module(x2)[far] - y[far]).abs().max() > 1e-4
        # the weight of the position information is learned: at 0 the position embedding has no effect
        module.position_weight.zero_()
        without = module(x)
        module.position.data.normal_()
        assert torch.allclose(module(x), without, atol=1e-6)


def test_improved_upsampling_is_bilinear_plus_a_learned_sub_pixel_correction():
    torch.manual_seed(0)
    up = ImprovedUpsampling(2, 4, 0, 4).eval()
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        up.sub_pixel.weight.zero_()
        up.sub_pixel.bias.zero_()
        plain = up.fuse(F.interpolate(up.reduce(x), scale_factor=2, mode="bilinear", align_corners=False))
        assert torch.allclose(up(x), plain, atol=1e-6)  # no correction: bilinear up-sampling
        up.sub_pixel.bias.normal_()
        assert not torch.allclose(up(x), plain, atol=1e-3)
    assert up(x).shape == (1, 4, 10, 12)


def test_lsanet_reads_stride_16_with_attention_and_decodes_through_strides_8_and_4():
    with torch.device("meta"):
        net = zoo.create("lsanet", **zoo.card("lsanet").paper_config)
    assert net.encoder.reductions[-1] == 16 and net.reduce.conv.in_channels == 2048
    assert net.attention.bins == (1, 3, 6, 8)
    assert net.up8.fuse.conv.in_channels == 128 + 512 and net.up4.fuse.conv.in_channels == 64 + 256
    assert "LSANet" in zoo.card("lsanet").notes and zoo.card("lsanet").reference.startswith("doi:10.1109/IJCNN")
