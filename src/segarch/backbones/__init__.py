"""Encoders shared by the zoo's segmentation networks (ResNet, VGG, ...), written once.

An encoder maps ``(B, C, *spatial)`` to a list of feature maps, finest first, and states their
channels (``out_channels``) and strides (``reductions``), as segmentation_models.pytorch encoders do.
Each is also registered in the zoo as ``task="backbone"``: built by name it is the paper's image
classifier (features → global pooling → linear), so its parameter count can be checked against
the paper's.
"""

from segarch.backbones.base import Encoder, ClassifierHead
from segarch.backbones.resnet import ResNetEncoder
from segarch.backbones.vgg import VGGEncoder

__all__ = ["Encoder", "ClassifierHead", "ResNetEncoder", "VGGEncoder"]
