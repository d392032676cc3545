"""The output contract of the zoo's multi-head (panoptic and instance) networks.

A semantic network returns one tensor of logits. A network with several heads (Panoptic-DeepLab's semantic
logits, centre heatmap and offsets; DeeperLab's keypoint maps and offsets; EfficientPS's semantic logits and
region-proposal maps) returns a ``dict`` of named tensors, one per head, in the order of ``net.heads``, and
describes each head with a :class:`Head`: its name, what it predicts (``kind``), its channels and its stride
(1: the input's grid). A dict of tensors is what PyTorch's own multi-output models return (torchvision's
detection and segmentation models), it passes through ``DataParallel``, ``torch.compile`` and ONNX export, and
the names say what each tensor is.

Examples::

    >>> net = zoo.create("panoptic_deeplab", out_channels=19)
    >>> [(h.name, h.kind, h.channels) for h in net.heads]
    [('semantic', 'semantic', 19), ('center', 'center', 1), ('offset', 'offset', 2)]
    >>> net.output_shapes((1, 3, 512, 1024))["offset"]
    (1, 2, 512, 1024)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from segarch.nets._base import SegmentationNet

__all__ = ["Head", "MultiHeadNet", "HEAD_KINDS"]

#: What a head predicts, which decides how it is trained and decoded:
#: ``semantic`` class logits; ``center`` an object-centre heatmap (regressed, Panoptic-DeepLab); ``offset`` a
#: displacement per pixel, in input pixels, one channel per axis (or per axis and keypoint); ``keypoints``
#: keypoint heatmap logits, one channel per keypoint (DeeperLab); ``objectness`` region-proposal logits, one
#: channel per anchor; ``boxes`` region-proposal box deltas, ``2 · spatial_dims`` channels per anchor.
HEAD_KINDS = ("semantic", "center", "offset", "keypoints", "objectness", "boxes")


@dataclass(frozen=True)
class Head:
    """One output of a multi-head network.

    Attributes:
        name: the key of the head's tensor in ``forward``'s dict.
        kind: one of :data:`HEAD_KINDS`.
        channels: the tensor's channels.
        stride: the tensor's grid relative to the input (1: the input's size; 8: ``size / 8``).
        description: what the channels hold, for a user.
    """

    name: str
    kind: str
    channels: int
    stride: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"`kind` of head {self.name!r} must be one of {HEAD_KINDS}, got {self.kind!r}.")


class MultiHeadNet(SegmentationNet):
    """Base of the networks whose ``forward(x)`` returns ``{head name: tensor}`` for the heads in ``self.heads``."""

    heads: tuple[Head, ...] = ()

    def get_head(self, name: str) -> Head:
        """The :class:`Head` called ``name``; a ``ValueError`` lists the heads this network has."""
        for head in self.heads:
            if head.name == name:
                return head
        raise ValueError(f"{type(self).__name__} has no head {name!r}; its heads: "
                         f"{', '.join(h.name for h in self.heads)}.")

    def output_shapes(self, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """The shape of each head's tensor for an input of ``input_shape`` ``(B, C, *spatial)``."""
        batch, _, *spatial = (int(s) for s in input_shape)
        return {h.name: (batch, h.channels, *(s // h.stride for s in spatial)) for h in self.heads}

