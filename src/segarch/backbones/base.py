"""The encoder contract and the classification head used to check backbones against their papers."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from segarch.layers.batch_statistics import ExplainsBatchStatistics

__all__ = ["Encoder", "ClassifierHead", "BackboneClassifier", "stem_pool_stages"]


class Encoder(nn.Module):
    """Base of the feature encoders.

    Subclasses set ``spatial_dims``, ``out_channels`` (channels of each returned feature map) and
    ``reductions`` (each map's stride relative to the input), and return the maps from ``forward``,
    finest first.
    """

    spatial_dims: int = 2
    out_channels: tuple[int, ...] = ()
    reductions: tuple[int, ...] = ()

    @property
    def size_divisor(self) -> int:
        return max(self.reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def stem_pool_stages(x: torch.Tensor, stem: nn.Module, pool: nn.Module,
                     stages: Iterable[nn.Module]) -> list[torch.Tensor]:
    """The feature list of a ResNet-like encoder: the stem's output, then (after ``pool``) each stage's output."""
    x = stem(x)
    features = [x]
    x = pool(x)
    for stage in stages:
        x = stage(x)
        features.append(x)
    return features


class ClassifierHead(nn.Module):
    """Global average pooling, optional dropout and a linear layer: the ImageNet classifier of a backbone."""

    def __init__(self, in_features: int, classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(in_features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x.flatten(2).mean(-1)))


class BackboneClassifier(ExplainsBatchStatistics):
    """An encoder with its classification head: what a ``task="backbone"`` zoo entry builds.

    ``forward(x)`` returns class logits ``(B, out_channels)``; ``features(x)`` the encoder's maps.
    """

    def __init__(self, encoder: Encoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.spatial_dims = encoder.spatial_dims
        self.size_divisor = encoder.size_divisor

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])
