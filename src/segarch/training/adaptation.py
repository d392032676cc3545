"""Unsupervised domain adaptation for ``segarch.train(..., adapt_to=<unlabelled target images>)``.

MADAN (Zhao et al., NeurIPS 2019, "Multi-source Domain Adaptation for Semantic Segmentation",
arXiv:1910.12181) adapts a segmentation network trained on labelled source images to unlabelled target
images in three parts: pixel-level image translation (CycleGANs with dynamic semantic consistency),
aggregation of the translated source domains (sub-domain and cross-domain discriminators), and
**feature-level alignment** of the aggregated domain with the target while the task network trains. Here
the last part is built: one labelled source domain, so there is nothing to aggregate, and the image
translation (several generators and discriminators trained for days on GPUs) is left out.

The alignment is the alternating GAN game of adversarial segmentation adaptation (CyCADA's feature-level
step, in AdaptSegNet's output-space form): a fully convolutional domain
discriminator reads the network's class probabilities (every zoo network has them, whatever its inside)
on source and target patches. Each step the segmentation network minimises its supervised loss on the
source batch plus ``adapt_weight`` × the adversarial loss that makes its target outputs look like source
outputs to the discriminator; then the discriminator takes one step at telling the two apart (source 0,
target 1). Validation stays on the labelled held-out source data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.networks.layers.factories import Conv
from torch import nn
from torch.nn import functional as F

from segarch.models.model import Model
from segarch.training.config import TrainConfig
from segarch.training.data import as_image_sources, make_items
from segarch.training.normalisation import PerImagePreprocessing
from segarch.training.sampler import PatchSampler
from segarch.training.task import TrainingTask

__all__ = ["DomainDiscriminator", "DomainAdaptation", "MIN_PATCH"]

#: The discriminator halves the patch four times: every axis of the patch needs at least this many pixels.
MIN_PATCH = 16
_SOURCE, _TARGET = 0.0, 1.0
_DISCRIMINATOR_LR = 0.4  # x the network's


class DomainDiscriminator(nn.Module):
    """A fully convolutional domain classifier of class-probability maps, laid out as AdaptSegNet's and CLAN's:
    four 4×4 convolutions of stride 2 with ``width``, 2×, 4×, 8× ``width`` channels and leaky ReLU (0.2), then
    a 3×3 convolution to one logit per place (source or target; theirs is a fifth 4×4 of stride 2, which
    would need patches of 32 pixels per axis).

    Args:
        spatial_dims: 2 or 3.
        in_channels: the segmentation network's output channels.
        width: the first convolution's channels (64 in the papers).
    """

    def __init__(self, spatial_dims: int, in_channels: int, width: int = 64) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        channels = in_channels
        for factor in (1, 2, 4, 8):
            layers += [conv(channels, width * factor, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = width * factor
        layers.append(conv(channels, 1, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return self.layers(probabilities)


class DomainAdaptation:
    """The adversarial alignment of one training run: the target patches, the discriminator and its optimiser.

    The training loop calls :meth:`alignment_loss` (added to the supervised loss before the network's step)
    and then :meth:`discriminator_step`.

    Args:
        images: the unlabelled target images, as ``segarch.train`` takes images (an array, a list, a TIFF/Zarr
            path or a folder), with the training images' ``axes`` and channels.
        model: the model being trained (after the task prepared it).
        task: its training task (gives the patch size and batch size).
        config: the run's options (``adapt_weight``, ``lr``, ``seed``, ``axes``).
        device: where the network trains.

    Raises:
        ValueError: a task that cannot adapt (extreme-point models), no target image, target images of
            other channels or dimensions, or a patch smaller than :data:`MIN_PATCH`.
    """

    def __init__(self, images: Any, model: Model, task: TrainingTask, config: TrainConfig,
                 device: torch.device) -> None:
        if not task.adapts:
            raise ValueError(f"`adapt_to` applies to semantic and instance training, not to {task.name!r} "
                             f"training ({model.arch!r}).")
        small = [p for p in task.input_size if p < MIN_PATCH]
        if small:
            raise ValueError(f"`adapt_to` needs a `patch` of at least {MIN_PATCH} pixels per axis (the domain "
                             f"discriminator halves it 4 times), got {tuple(task.input_size)}.")
        sources = as_image_sources(images, axes=config.axes, spatial_dims=model.spatial_dims,
                                   in_channels=model.in_channels)
        patch = task.input_size
        self.weight = float(config.adapt_weight)
        self.sampler = PatchSampler(make_items(sources), patch,
                                    PerImagePreprocessing(model.preprocessing, sources, [2 * p for p in patch]),
                                    2, "none", seed=config.seed + 1)  # crops only, as AdaptSegNet's target
        self.spatial_dims = model.spatial_dims
        self.lr = float(config.lr)
        self.device = device
        self.images = len(sources)
        self.discriminator: DomainDiscriminator | None = None  # built on the first outputs (their channels)
        self.optimiser: torch.optim.Optimizer | None = None
        self._target_probabilities: torch.Tensor | None = None

    def _build(self, channels: int) -> DomainDiscriminator:
        torch_state = torch.random.get_rng_state()
        self.discriminator = DomainDiscriminator(self.spatial_dims, channels).to(self.device)
        torch.random.set_rng_state(torch_state)  # the network's own random stream stays as without adaptation
        # Adam with beta1 0.9, beta2 0.99 and 0.4x the network's learning rate, as AdaptSegNet trains its
        # discriminators (1e-4 against the network's 2.5e-4).
        self.optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=_DISCRIMINATOR_LR * self.lr,
                                          betas=(0.9, 0.99))
        return self.discriminator

    def alignment_loss(self, net: nn.Module, batch_size: int) -> torch.Tensor:
        """``adapt_weight`` × the adversarial loss of a target batch: the network is rewarded when the
        discriminator takes its target outputs for source outputs (the discriminator is not updated here)."""
        x, _, _ = self.sampler.batch(batch_size)
        logits = _class_scores(net(x.to(self.device)))
        probabilities = torch.softmax(logits, dim=1)
        discriminator = self.discriminator or self._build(probabilities.shape[1])
        discriminator.requires_grad_(False)
        try:
            score = discriminator(probabilities)
        finally:
            discriminator.requires_grad_(True)
        self._target_probabilities = probabilities.detach()
        return self.weight * F.binary_cross_entropy_with_logits(score, torch.full_like(score, _SOURCE))

    def discriminator_step(self, source_output: Any) -> float:
        """One discriminator step on the source outputs of this step and the target outputs of the last
        :meth:`alignment_loss`; returns its loss (binary cross-entropy, mean of both domains)."""
        if self._target_probabilities is None or self.discriminator is None:
            raise RuntimeError("discriminator_step() needs alignment_loss() first, in the same step.")
        source = torch.softmax(_class_scores(source_output).detach(), dim=1)
        score_source = self.discriminator(source)
        score_target = self.discriminator(self._target_probabilities)
        loss = 0.5 * (F.binary_cross_entropy_with_logits(score_source, torch.full_like(score_source, _SOURCE))
                      + F.binary_cross_entropy_with_logits(score_target, torch.full_like(score_target, _TARGET)))
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self._target_probabilities = None
        value = float(loss.detach())
        if not np.isfinite(value):
            raise FloatingPointError(f"the domain discriminator's loss became {value}: lower `lr` or `adapt_weight`.")
        return value


def _class_scores(output: Any) -> torch.Tensor:
    """The network's class scores ``(B, classes, *size)``; networks of several named outputs cannot adapt."""
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"`adapt_to` needs a network whose output is one map of class scores; this one returns "
                         f"{type(output).__name__} (several heads).")
    return output
