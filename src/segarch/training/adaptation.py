"""Unsupervised domain adaptation for ``segarch.train(..., adapt_to=<unlabelled target images>)``.

MADAN (Zhao et al., NeurIPS 2019, "Multi-source Domain Adaptation for Semantic Segmentation",
arXiv:1910.12181) adapts a segmentation network trained on labelled source images to unlabelled target
images in three parts: pixel-level image translation (CycleGANs with dynamic semantic consistency),
aggregation of the translated source domains (sub-domain and cross-domain discriminators), and
**feature-level alignment** of the aggregated domain with the target while the task network trains. Here
the last part is built: one labelled source domain, so there is nothing to aggregate, and the image
translation (several generators and discriminators trained for days on GPUs) is left out.

The alignment is the alternating GAN game of adversarial segmentation adaptation, as MADAN's released code runs
its feature-level step (CyCADA's ADDA step, ``train_fcn_adda.py``, with the discriminator on the class scores, its
``--discrim_score`` setting): a domain discriminator of 1×1 convolutions (:class:`DomainDiscriminator`, theirs)
reads the network's class probabilities (every zoo network has them, whatever its inside) at each place of source
and target patches. Each step the discriminator takes
one step at telling the two apart (source 0, target 1); the segmentation network minimises its supervised loss on
the source batch plus ``adapt_weight`` (0.1, MADAN's ``lambda_g``) × the adversarial loss that makes its target
outputs look like source outputs to the discriminator, with two rules of that code:

- **the network learns the source first**: MADAN starts the alignment from a network trained on the source
  images; here the first half of the steps (:data:`ALIGN_FROM`) are the supervised loss alone (the discriminator
  already learns, as MADAN's is pre-trained before the alignment);
- **the network is pushed only by a discriminator that tells the domains apart**: the adversarial term counts only
  while the discriminator's accuracy over the last steps is above 60% (its ``dom_acc_thresh``), so a confused
  discriminator does not push the network at random.

``adapt_discriminator="spatial"`` swaps in AdaptSegNet's discriminator (:class:`SpatialDomainDiscriminator`,
weight 0.01), which judges the layout of the outputs: on out-of-focus, low-light images it raised the target
Dice where the per-place one cannot (``benchmarks/adaptation.py``, ``benchmarks/results/adaptation_plan.md``).

Validation stays on the labelled held-out source data.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from monai.networks.layers.factories import Conv
from torch import nn
from torch.nn import functional as F

from segarch.models.model import Model
from segarch.training.config import ADAPT_DISCRIMINATORS, TrainConfig
from segarch.training.data import as_image_sources, make_items
from segarch.training.normalisation import PerImagePreprocessing
from segarch.training.sampler import PatchSampler
from segarch.training.task import TrainingTask

__all__ = ["DomainDiscriminator", "SpatialDomainDiscriminator", "DomainAdaptation", "DISCRIMINATORS", "ALIGN_FROM",
           "ACCURACY_GATE"]

#: The share of the steps trained on the source alone before the alignment starts.
ALIGN_FROM = 0.5
#: The adversarial term counts while the discriminator's accuracy over the last :data:`_ACCURACY_STEPS` steps is
#: above this (MADAN's ``dom_acc_thresh``, 60%).
ACCURACY_GATE = 0.6
_ACCURACY_STEPS = 20
_SOURCE, _TARGET = 0.0, 1.0
_DISCRIMINATOR_LR = 0.4  # x the network's


class DomainDiscriminator(nn.Module):
    """The domain classifier of MADAN's released feature-level step (CyCADA's ``Discriminator``): it judges each
    place's class probabilities on their own, by 1×1 convolutions to ``width`` and ``width / 2`` channels, each
    with dropout (0.5) and ReLU, then to one logit (source or target; theirs gives two logits of a softmax, the
    same classifier). ``adapt_discriminator="per-place"``, the default. Per place, a wrong output is as
    confident as a right one: on the styles of ``benchmarks/adaptation.py`` it gained nothing.

    Args:
        spatial_dims: 2 or 3.
        in_channels: the segmentation network's output channels.
        width: the first convolution's channels (512 in their code for class scores).
    """

    def __init__(self, spatial_dims: int, in_channels: int, width: int = 512) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        dropout = nn.Dropout2d if spatial_dims == 2 else nn.Dropout3d
        self.layers = nn.Sequential(conv(in_channels, width, 1), dropout(0.5), nn.ReLU(),
                                    conv(width, width // 2, 1), dropout(0.5), nn.ReLU(),
                                    conv(width // 2, 1, 1))

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return self.layers(probabilities)


class SpatialDomainDiscriminator(nn.Module):
    """AdaptSegNet's output-space discriminator (Tsai et al. 2018, ``FCDiscriminator``): four 4×4 convolutions of
    stride 2 to ``width``, 2×, 4×, 8× ``width`` channels with leaky ReLU (0.2), then a fifth to one logit per
    region, so it judges the layout of the class probabilities (shapes, fragments), not each place alone.
    ``adapt_discriminator="spatial"`` (weight 0.01 by default). On the out-of-focus, low-light style of
    ``benchmarks/adaptation.py`` it raised the target Dice on 8 of 8 seeds (pre-registered fresh run: +0.079
    median); on uneven illumination and another camera it changed nothing, and on inverted contrast (an earlier
    scheme) it lowered it: not the default. Patches of 32 px or more.

    Args:
        spatial_dims: 2 or 3.
        in_channels: the segmentation network's output channels.
        width: the first convolution's channels (64, theirs).
    """

    def __init__(self, spatial_dims: int, in_channels: int, width: int = 64) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        channels = in_channels
        for factor in (1, 2, 4, 8):
            layers += [conv(channels, width * factor, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = width * factor
        layers.append(conv(channels, 1, kernel_size=4, stride=2, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return self.layers(probabilities)


#: ``adapt_discriminator`` -> the discriminator class and the default ``adapt_weight`` it is measured with
#: (``benchmarks/adaptation.py``).
DISCRIMINATORS: dict[str, tuple[type[nn.Module], float]] = {"per-place": (DomainDiscriminator, 0.1),
                                                             "spatial": (SpatialDomainDiscriminator, 0.01)}
assert tuple(DISCRIMINATORS) == ADAPT_DISCRIMINATORS
_SPATIAL_MIN_PATCH = 32


class DomainAdaptation:
    """The adversarial alignment of one training run: the target patches, the discriminator and its optimiser.

    The training loop calls :meth:`alignment_loss` (added to the supervised loss before the network's step)
    and then :meth:`discriminator_step`.

    Args:
        images: the unlabelled target images, as ``segarch.train`` takes images (an array, a list, a TIFF/Zarr
            path or a folder), with the training images' ``axes`` and channels.
        model: the model being trained (after the task prepared it).
        task: its training task (gives the patch size and batch size).
        config: the run's options (``adapt_discriminator``, ``adapt_weight``, ``lr``, ``seed``, ``axes``).
        device: where the network trains.

    Raises:
        ValueError: a task that cannot adapt (extreme-point models), no target image, target images of
            other channels or dimensions, or patches too small for the spatial discriminator.
    """

    def __init__(self, images: Any, model: Model, task: TrainingTask, config: TrainConfig,
                 device: torch.device) -> None:
        if not task.adapts:
            raise ValueError(f"`adapt_to` applies to semantic and instance training, not to {task.name!r} "
                             f"training ({model.arch!r}).")
        sources = as_image_sources(images, axes=config.axes, spatial_dims=model.spatial_dims,
                                   in_channels=model.in_channels)
        patch = task.input_size
        self.discriminator_type, default_weight = DISCRIMINATORS[config.adapt_discriminator or "per-place"]
        if config.adapt_discriminator == "spatial" and min(patch) < _SPATIAL_MIN_PATCH:
            raise ValueError(f"`adapt_discriminator`='spatial' needs patches of at least {_SPATIAL_MIN_PATCH} px "
                             f"(its five stride-2 convolutions), got `patch`={tuple(patch)}: use a larger `patch` "
                             f"or `adapt_discriminator`='per-place'.")
        self.weight = float(default_weight if config.adapt_weight is None else config.adapt_weight)
        self.sampler = PatchSampler(make_items(sources), patch,
                                    PerImagePreprocessing(model.preprocessing, sources, [2 * p for p in patch]),
                                    2, "none", seed=config.seed + 1)  # crops only, as AdaptSegNet's target
        self.spatial_dims = model.spatial_dims
        self.lr = float(config.lr)
        self.device = device
        self.images = len(sources)
        self.align_from = int(ALIGN_FROM * int(config.steps))
        self.step = 0
        self.accuracies: list[float] = []
        self.aligned_steps = 0  # steps whose loss held the adversarial term
        self.seed = int(config.seed) + 2
        self._random_state: torch.Tensor | None = None
        self.discriminator: nn.Module | None = None  # built on the first outputs (their channels)
        self.optimiser: torch.optim.Optimizer | None = None
        self._target_probabilities: torch.Tensor | None = None

    def describe(self, steps: int) -> str:
        """The sentence the trained model's description gets (the weight, the discriminator, the aligned steps)."""
        kind = "MADAN's per-place" if self.discriminator_type is DomainDiscriminator else "AdaptSegNet's spatial"
        return (f"Adapted to unlabelled target images by feature-level adversarial alignment (MADAN, weight "
                f"{self.weight:g}, {kind} discriminator; the alignment counted on {self.aligned_steps} of {steps} "
                f"steps).")

    @contextlib.contextmanager
    def _own_random_stream(self):
        """The discriminator's initial weights and dropout draw from their own random stream, so the network's
        stays as without adaptation (the difference a run makes is the alignment's)."""
        network_state = torch.random.get_rng_state()
        if self._random_state is None:
            torch.manual_seed(self.seed)
        else:
            torch.random.set_rng_state(self._random_state)
        try:
            yield
        finally:
            self._random_state = torch.random.get_rng_state()
            torch.random.set_rng_state(network_state)

    def _build(self, channels: int) -> nn.Module:
        with self._own_random_stream():
            self.discriminator = self.discriminator_type(self.spatial_dims, channels).to(self.device)
        # Adam with beta1 0.9, beta2 0.99 and 0.4x the network's learning rate, as AdaptSegNet trains its
        # discriminators (1e-4 against the network's 2.5e-4).
        self.optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=_DISCRIMINATOR_LR * self.lr,
                                          betas=(0.9, 0.99))
        return self.discriminator

    def alignment_loss(self, net: nn.Module, batch_size: int) -> torch.Tensor:
        """``adapt_weight`` × the adversarial loss of a target batch: the network is rewarded when the
        discriminator takes its target outputs for source outputs (the discriminator is not updated here). Zero
        (the target batch still passes, for the discriminator) before :data:`ALIGN_FROM` of the steps and while
        the discriminator's recent accuracy is at most :data:`ACCURACY_GATE`."""
        self.step += 1
        x, _, _ = self.sampler.batch(batch_size)
        recent = self.accuracies[-_ACCURACY_STEPS:]
        aligns = self.step > self.align_from and bool(recent) and float(np.mean(recent)) > ACCURACY_GATE
        with torch.set_grad_enabled(aligns and torch.is_grad_enabled()):
            logits = _class_scores(net(x.to(self.device)))
        probabilities = torch.softmax(logits, dim=1)
        discriminator = self.discriminator or self._build(probabilities.shape[1])
        self._target_probabilities = probabilities.detach()
        if not aligns:
            return probabilities.new_zeros(())
        self.aligned_steps += 1
        discriminator.requires_grad_(False)
        try:
            with self._own_random_stream():
                score = discriminator(probabilities)
        finally:
            discriminator.requires_grad_(True)
        return self.weight * F.binary_cross_entropy_with_logits(score, torch.full_like(score, _SOURCE))

    def discriminator_step(self, source_output: Any) -> float:
        """One discriminator step on the source outputs of this step and the target outputs of the last
        :meth:`alignment_loss`; returns its loss (binary cross-entropy, mean of both domains)."""
        if self._target_probabilities is None or self.discriminator is None:
            raise RuntimeError("discriminator_step() needs alignment_loss() first, in the same step.")
        source = torch.softmax(_class_scores(source_output).detach(), dim=1)
        with self._own_random_stream():
            score_source = self.discriminator(source)
            score_target = self.discriminator(self._target_probabilities)
        loss = 0.5 * (F.binary_cross_entropy_with_logits(score_source, torch.full_like(score_source, _SOURCE))
                      + F.binary_cross_entropy_with_logits(score_target, torch.full_like(score_target, _TARGET)))
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        with torch.no_grad():  # the share of places it put in the right domain
            right = torch.cat([(score_source < 0).reshape(-1), (score_target > 0).reshape(-1)]).float().mean()
        self.accuracies.append(float(right))
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
