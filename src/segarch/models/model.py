"""``segarch.Model``: a network with everything needed to use it (classes, axes, pre-processing).

Everything that runs a network (``segarch.predict``, training, ``segment_from_points``) sees a
:class:`Model`: a bare ``torch.nn.Module`` becomes one at the door (:func:`as_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from segarch import zoo
from segarch.axes import model_axes
from segarch.preprocessing import DEFAULT_PREPROCESSING, Preprocessor, check_preprocessing

__all__ = ["Model", "as_model", "weights_sha256"]


@dataclass(eq=False)
class Model:
    """A zoo network plus what a user needs to apply it to images.

    Attributes:
        network: the ``torch.nn.Module``.
        arch: its registry name.
        options: the architecture options it was built with (beyond dims and channels).
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        class_names: one name per output channel (``"background"`` first for semantic models).
        axes: the input axes it expects, e.g. ``"CYX"`` or ``"CZYX"``.
        pixel_size: the pixel/voxel size it was trained at, per spatial axis, if known.
        preprocessing: MONAI transform configs applied to each input (see :mod:`segarch.preprocessing`).
        trained: whether the weights were trained (``False`` for a freshly built architecture).
        description: free text: what it was trained on and how.
        prompt: extreme-point models: the crop recipe they were trained with (``size``, ``margin``,
            ``min_margin``, ``sigma``, see :class:`segarch.prompts.PromptSettings`); ``None``: their kind's default.
        instance: instance models: the decoder that turns their output into objects, as plain settings
            (``{"decoder": "distance", "bins": 4, "seed_threshold": 0.6, ...}``, see
            :mod:`segarch.instances.decode`), tuned on held-out images when trained; ``None`` for other models.
        panoptic: bottom-up panoptic models (Panoptic-DeepLab, DeeperLab) trained with ``task="panoptic"``:
            ``{"thing_classes": [1, 2], "label_divisor": 1000}``, the classes that have objects and the divisor of
            the panoptic ids (``class · label_divisor + instance``) it was trained with; ``None`` otherwise.
        bands: a multispectral model: the names of the bands it was trained on, in its input order
            (``["red", "green", "blue", "nir"]``); ``segarch.predict`` picks them from a raster by name.
        name: where it came from, for provenance: the shipped model's name (``"unet.nuclei2d"``) or the model
            file's name; ``None`` for a network built here. Not saved in model files.
        history: after training, the training log's rows (also written as CSV); ``None`` otherwise. Not saved.
        validation: after training, the held-out measures (``"patch_dice"``, ``"object_iou"``, ...); ``None``
            otherwise. Not saved.

    Examples::

        >>> model = Model.from_zoo("unet", spatial_dims=2, in_channels=1, out_channels=3)
        >>> segarch.save_model(model, "unet.safetensors")
    """

    network: nn.Module
    arch: str
    options: dict[str, Any] = field(default_factory=dict)
    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 2
    class_names: list[str] | None = None
    axes: str | None = None
    pixel_size: list[float] | None = None
    preprocessing: list[dict[str, Any]] = field(default_factory=lambda: [dict(t) for t in DEFAULT_PREPROCESSING])
    trained: bool = False
    description: str = ""
    prompt: dict[str, Any] | None = None
    instance: dict[str, Any] | None = None
    panoptic: dict[str, Any] | None = None
    name: str | None = None
    bands: list[str] | None = None
    history: list[dict[str, Any]] | None = field(default=None, repr=False)
    validation: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.class_names is None:
            self.class_names = ["background"] + [f"class {i}" for i in range(1, self.out_channels)]
        if len(self.class_names) != self.out_channels:
            raise ValueError(
                f"`class_names` must have one name per output channel ({self.out_channels}), got {self.class_names!r}."
            )
        self.class_names = [str(n) for n in self.class_names]
        self.axes = self.axes or model_axes(self.spatial_dims)
        if sorted(self.axes) != sorted(model_axes(self.spatial_dims)):
            raise ValueError(
                f"`axes` must hold C and the {self.spatial_dims} spatial axes "
                f"({model_axes(self.spatial_dims)!r}), got {self.axes!r}."
            )
        if self.bands is not None:
            if len(self.bands) != self.in_channels or not all(isinstance(b, str) and b for b in self.bands):
                raise ValueError(f"`bands` must name each of the {self.in_channels} input channels, got "
                                 f"{self.bands!r}.")
            self.bands = [str(b) for b in self.bands]
        if self.pixel_size is not None:
            if len(self.pixel_size) != self.spatial_dims:
                raise ValueError(f"`pixel_size` must have {self.spatial_dims} values, got {self.pixel_size!r}.")
            self.pixel_size = [float(v) for v in self.pixel_size]
        self.preprocessing = check_preprocessing(self.preprocessing)
        self.panoptic = check_panoptic(self.panoptic, self.out_channels)

    @classmethod
    def from_zoo(cls, arch: str, *, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 class_names: Sequence[str] | None = None, **options: Any) -> "Model":
        """Build an untrained model of architecture ``arch`` (see :func:`segarch.zoo.create`)."""
        network = zoo.create(arch, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **options)
        return cls(network, zoo.card(arch).name, dict(options), spatial_dims, in_channels, out_channels,
                   list(class_names) if class_names is not None else None)

    @property
    def card(self) -> zoo.ModelCard:
        """The zoo card of its architecture (a ``ValueError`` for a wrapped network of no zoo architecture)."""
        return zoo.card(self.arch)

    @property
    def task(self) -> str:
        """What it does: its architecture's task (``"semantic"``, ``"interactive"``, ...); ``"semantic"`` for a
        wrapped network of no zoo architecture."""
        return zoo.card(self.arch).task if self.arch in zoo.names() else "semantic"

    @property
    def size_divisor(self) -> int:
        """Spatial input sizes must be multiples of this."""
        divisor = getattr(self.network, "size_divisor", None)
        if divisor is None:
            divisor = zoo.card(self.arch).size_divisor if self.arch in zoo.names() else 1
        return int(divisor or 1)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def preprocess(self, array) -> np.ndarray:
        """Apply the model's pre-processing to one whole image ``(C, *spatial)``; returns float32.

        Percentiles are measured over the whole image, as ``segarch.predict`` measures them before it tiles
        (:class:`segarch.preprocessing.Preprocessor`).
        """
        array = np.asarray(array)
        return Preprocessor.for_image(self.preprocessing, lambda: array.reshape(array.shape[0], -1))(array)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the network for a batch ``(B, C, *spatial)``."""
        return self.network(x)

    def metadata(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-serialisable data (what a model file stores)."""
        return {
            "arch": self.arch,
            "options": _jsonable(self.options),
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "class_names": list(self.class_names),
            "axes": self.axes,
            "pixel_size": self.pixel_size,
            "preprocessing": self.preprocessing,
            "trained": self.trained,
            "description": self.description,
            "prompt": None if self.prompt is None else dict(self.prompt),
            "instance": None if self.instance is None else dict(self.instance),
            "panoptic": None if self.panoptic is None else dict(self.panoptic),
            "bands": None if self.bands is None else list(self.bands),
        }

    def __repr__(self) -> str:
        state = "trained" if self.trained else "untrained"
        return (f"Model({self.arch!r}, {self.spatial_dims}D, {self.in_channels}→{self.out_channels} channels, "
                f"classes={self.class_names}, {self.num_parameters / 1e6:.2f}M parameters, {state})")


def weights_sha256(network: nn.Module) -> str:
    """SHA-256 over the network's state dict (names and values, parameters and buffers), in name order: what a
    stored result's fingerprint and the ONNX export cache key both name the weights by."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_panoptic(panoptic: Any, out_channels: int | None = None, where: str = "`panoptic`"
                   ) -> dict[str, Any] | None:
    """A panoptic model's settings, checked as plain data (nothing is evaluated): ``None``, or
    ``{"thing_classes": [ints from 1 to out_channels - 1, distinct], "label_divisor": positive int}``; returns a
    clean copy. A ``ValueError`` names ``where`` and what is allowed."""
    if panoptic is None:
        return None
    if not isinstance(panoptic, Mapping) or set(panoptic) != {"thing_classes", "label_divisor"}:
        raise ValueError(f"{where} must be None or an object with exactly 'thing_classes' and 'label_divisor', got "
                         f"{panoptic!r:.120}.")
    things, divisor = panoptic["thing_classes"], panoptic["label_divisor"]
    top = 4096 if out_channels is None else out_channels - 1
    if (not isinstance(things, (list, tuple)) or len(things) > 4096
            or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= top for c in things)
            or len(set(things)) != len(things)):
        raise ValueError(f"{where}: 'thing_classes' must be a list of distinct class indices from 1 to {top} "
                         f"(0 is background), got {things!r:.120}.")
    if not isinstance(divisor, int) or isinstance(divisor, bool) or not 1 <= divisor <= 2 ** 31:
        raise ValueError(f"{where}: 'label_divisor' must be a positive integer, got {divisor!r:.120}.")
    return {"thing_classes": [int(c) for c in things], "label_divisor": int(divisor)}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def as_model(network: "Model | nn.Module", *, spatial_dims: int | None = None, in_channels: int | None = None,
             out_channels: int | None = None, class_names: Sequence[str] | None = None,
             arch: str | None = None) -> Model:
    """``network`` as a :class:`Model` (a Model is returned as it is).

    A bare ``torch.nn.Module`` is wrapped as trained, with no pre-processing beyond float32: its
    architecture is the zoo name of its class (else the class's name), ``spatial_dims`` its attribute of
    that name (else 3 for a first ``Conv3d``, else 2), ``in_channels`` its first convolution's, and
    ``out_channels`` must be given (``segarch.predict`` asks the network, on a tile).

    Raises:
        ValueError: not a Model or a ``torch.nn.Module``, or no ``out_channels`` for a bare module.
    """
    if isinstance(network, Model):
        return network
    if not isinstance(network, nn.Module):
        raise ValueError(f"`model` must be a segarch.Model or a torch.nn.Module, got {type(network).__name__}.")
    first = next((m for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if spatial_dims is None:
        spatial_dims = getattr(network, "spatial_dims", None) or (3 if isinstance(first, nn.Conv3d) else 2)
    if in_channels is None:
        in_channels = first.in_channels if first is not None else 1
    if out_channels is None:
        raise ValueError(f"`out_channels` is needed to wrap a bare {type(network).__name__} as a segarch.Model.")
    if arch is None:
        arch = next((c.name for c in zoo.cards() if c.builder is type(network)), type(network).__name__)
    return Model(network, arch, {}, int(spatial_dims), int(in_channels), int(out_channels),
                 list(class_names) if class_names is not None else None, preprocessing=[], trained=True)
