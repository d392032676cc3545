"""The multi-resolution parts of HRNet (Wang et al., TPAMI 2020, arXiv:1908.07919), written once.

HRNet keeps parallel branches at strides 4, 8, 16 and 32 with widths C, 2C, 4C, 8C. A *module*
runs a few blocks on every branch independently, then *fuses*: every output branch receives the
sum of all input branches, brought to its resolution and width (a 1×1 convolution and linear
up-sampling from coarser branches, chains of strided 3×3 convolutions from finer ones). A
*transition* between stages adapts widths and opens the next, coarser branch. HRFormer (Yuan et
al. 2021, arXiv:2110.09408) reuses all three with transformer blocks inside the branches, so the
block is supplied by a factory.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import resize_to

__all__ = ["HRFusion", "HRTransition", "HRModule"]

BlockFactory = Callable[[int, int], nn.Module]  # (branch index, channels) -> block keeping the channels


class HRFusion(nn.Module):
    """Exchange across resolutions: output ``i`` = ReLU(Σ_j transform_ij(x_j)).

    Args:
        spatial_dims: 2 or 3.
        channels: widths of the input branches, finest first (branch ``i`` has stride ``2**i`` relative
            to branch 0).
        out_branches: how many output branches to produce (the finest ones); fewer than the inputs
            when only the high-resolution output is wanted (HRNetV1's last module).
        separable: each strided step is a depth-wise 3×3 convolution + BN and a 1×1 convolution + BN
            (HRFormer's fusion) instead of a full 3×3 convolution + BN (HRNet's).
    """

    def __init__(self, spatial_dims: int, channels: Sequence[int], out_branches: int | None = None,
                 separable: bool = False) -> None:
        super().__init__()
        channels = tuple(channels)
        out_branches = len(channels) if out_branches is None else out_branches
        self.transforms = nn.ModuleList()
        for i in range(out_branches):
            row = nn.ModuleList()
            for j, cj in enumerate(channels):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # coarser: match width with a 1x1 convolution; up-sampled in forward
                    row.append(ConvNormAct(spatial_dims, cj, channels[i], 1, act=None))
                else:  # finer: i - j strided 3x3 convolutions, the last one changing the width
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        c_out, act = (channels[i], None) if last else (cj, "relu")
                        if separable:
                            steps.append(nn.Sequential(
                                ConvNormAct(spatial_dims, cj, cj, 3, stride=2, groups=cj, act=None),
                                ConvNormAct(spatial_dims, cj, c_out, 1, act=act),
                            ))
                        else:
                            steps.append(ConvNormAct(spatial_dims, cj, c_out, 3, stride=2, act=act))
                    row.append(nn.Sequential(*steps))
            self.transforms.append(row)
        self.act = nn.ReLU(inplace=False)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i, row in enumerate(self.transforms):
            size = xs[i].shape[2:]
            total = xs[i]
            for j, transform in enumerate(row):
                if j != i:
                    total = total + resize_to(transform(xs[j]), size)
            outs.append(self.act(total))
        return outs


class HRTransition(nn.Module):
    """Between stages: adapt the widths of existing branches and open new, coarser ones.

    Args:
        spatial_dims: 2 or 3.
        in_channels: widths of the previous stage's branches.
        out_channels: widths of the next stage's branches (at least as many).

    A branch whose width is unchanged passes through; a new branch is made from the coarsest
    previous branch by strided 3×3 convolutions (one per halving).
    """

    def __init__(self, spatial_dims: int, in_channels: Sequence[int], out_channels: Sequence[int]) -> None:
        super().__init__()
        in_channels, out_channels = tuple(in_channels), tuple(out_channels)
        self.branches = nn.ModuleList()
        for i, c_out in enumerate(out_channels):
            if i < len(in_channels):
                self.branches.append(
                    nn.Identity() if in_channels[i] == c_out else ConvNormAct(spatial_dims, in_channels[i], c_out, 3)
                )
            else:
                steps, c = [], in_channels[-1]
                for k in range(i + 1 - len(in_channels)):
                    nxt = c_out if k == i - len(in_channels) else c
                    steps.append(ConvNormAct(spatial_dims, c, nxt, 3, stride=2))
                    c = nxt
                self.branches.append(nn.Sequential(*steps))
        self.n_in = len(in_channels)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [branch(xs[i] if i < self.n_in else xs[-1]) for i, branch in enumerate(self.branches)]


class HRModule(nn.Module):
    """Parallel branches of blocks, then a multi-resolution fusion.

    Args:
        spatial_dims: 2 or 3.
        channels: branch widths, finest first.
        num_blocks: blocks per branch.
        make_block: ``make_block(branch_index, channels)`` returns one block that keeps the width
            (a residual basic block in HRNet, a local-window transformer block in HRFormer).
        out_branches: output branches of the fusion (default: all).
        separable_fusion: depth-wise separable strided steps in the fusion (HRFormer).
    """

    def __init__(self, spatial_dims: int, channels: Sequence[int], num_blocks: int, make_block: BlockFactory,
                 out_branches: int | None = None, separable_fusion: bool = False) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[make_block(i, c) for _ in range(num_blocks)]) for i, c in enumerate(channels)
        )
        single = len(channels) == 1
        self.fusion = None if single else HRFusion(spatial_dims, channels, out_branches, separable_fusion)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        ys = [branch(x) for branch, x in zip(self.branches, xs)]
        return ys if self.fusion is None else self.fusion(ys)
