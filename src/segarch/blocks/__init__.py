"""Building blocks shared by the zoo's architectures, written once and reused.

Every block takes ``spatial_dims`` first so the same code builds 2D and 3D networks.
"""

from segarch.blocks.attention import AttentionGate
from segarch.blocks.conv import ConvNormAct, DoubleConv, NormActConv
from segarch.blocks.upsample import UpSample

__all__ = ["AttentionGate", "ConvNormAct", "DoubleConv", "NormActConv", "UpSample"]
