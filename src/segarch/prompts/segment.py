"""``segment_from_points``: one object's mask from its extreme points (the DEXTR recipe, 2D and 3D)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch

from segarch.arrays import compute_here
from segarch.axes import guess_axes
from segarch.devices import resolve_device
from segarch.models.catalog import resolve
from segarch.models.model import Model, as_model
from segarch.prompts.points import check_clicks, check_points
from segarch.prompts.recipe import DEFAULTS, PromptSettings, prompt_input, resize
from segarch.prompts.voxels import resample, scaled_crop_box, voxel_scale
from segarch.runtimes import check_runtime

__all__ = ["segment_from_points", "settings_for", "object_probability", "resolve_prompt_model"]

log = logging.getLogger("segarch.prompts")


def resolve_prompt_model(model: Any) -> Model:
    """An extreme-point :class:`segarch.Model` from a Model (as it is), a bare ``torch.nn.Module`` (wrapped:
    image channels + heat map in, background/object out), or a reference the catalogue resolves
    (:mod:`segarch.models.catalog`): shipped weights (``"dextr_light.objects2d"``), a session model or a model
    file. An architecture's name alone (``"dextr_light"``) is refused: an untrained network draws nothing.
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, torch.nn.Module):
        return as_model(model, out_channels=2, class_names=["background", "object"])
    return resolve(model, task="interactive", trained=True)


def settings_for(model, *, size: int | None = None, margin: float | None = None,
                 sigma: float | None = None) -> PromptSettings:
    """The crop recipe for ``model`` (the one it was trained with, else its kind's defaults), with any of
    ``size``, ``margin``, ``sigma`` overridden."""
    base = DEFAULTS.get(model.arch, DEFAULTS["dextr_light"])[model.spatial_dims]
    recorded = getattr(model, "prompt", None)
    if recorded:
        try:
            base = PromptSettings(**recorded)
        except TypeError:
            raise ValueError(f"The model's prompt recipe {recorded!r} has unknown fields; allowed: size, margin, "
                             f"min_margin, sigma, corrections.") from None
    divisor = model.size_divisor
    size = base.size if size is None else size
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < divisor or size % divisor:
        raise ValueError(f"`size` must be a positive multiple of the model's size divisor {divisor}, got {size!r}.")
    number = (int, float)
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, number) or not 0 <= margin <= 2):
        raise ValueError(f"`margin` must be a number in [0, 2] (a fraction of the points' largest extent), "
                         f"got {margin!r}.")
    if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, number) or not 0 < sigma < 0.5):
        raise ValueError(f"`sigma` must be a number in (0, 0.5) (a fraction of `size`), got {sigma!r}.")
    return PromptSettings(int(size), base.margin if margin is None else float(margin), base.min_margin,
                          base.sigma if sigma is None else float(sigma), bool(base.corrections))


def _image_axes(shape: Sequence[int], axes: str | None, dims: int, channels: int) -> str:
    spatial = "ZYX"[-dims:]
    if axes is not None:
        ax = str(axes).upper()
        if sorted(ax) != sorted(spatial + ("C" if "C" in ax else "")) or len(ax) != len(shape):
            raise ValueError(f"`axes` must name the image's {len(shape)} axes with {spatial!r} and optionally 'C' "
                             f"(e.g. {spatial!r}, {'C' + spatial!r}, {spatial + 'C'!r}) for a {dims}D model, "
                             f"got {axes!r} for shape {tuple(shape)}.")
        return ax
    try:
        return guess_axes(shape, spatial_dims=dims, in_channels=channels, stacks=False)
    except ValueError:
        raise ValueError(f"The image of shape {tuple(shape)} does not fit a {dims}D model: expected {dims} spatial "
                         f"axes and an optional channel axis; pass `axes` (e.g. {'C' + spatial!r}).") from None


#: PyTorch (2.x, ``ConvParams::use_mkldnn``) runs a CPU convolution on its native kernel, not oneDNN, when the
#: batch is 1 and batch × channels × the first two spatial sizes is at most this; for volumes that native 3D
#: kernel is 2-4x slower than oneDNN (the rule was tuned for 2D images).
_NATIVE_CONV_LIMIT = 20480


def _needs_batch_of_two(network: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether a single small volume runs faster as two copies (so that PyTorch takes its oneDNN path).

    Decided by the full-resolution layers, where most of the work is: the first 3D convolution's output
    channels × depth × height at or under PyTorch's limit. Measured on 2 cores (1 thread): a 32³ crop
    into 16 channels 2.1x faster as two copies; 24 channels or a 48³ crop already take oneDNN (copies: 0.7-0.9x).
    """
    if x.ndim != 5 or x.shape[0] != 1 or x.device.type != "cpu":
        return False
    first = next((m for m in network.modules() if isinstance(m, torch.nn.Conv3d)), None)
    if first is None:
        return False
    return first.out_channels * x.shape[2] * x.shape[3] <= _NATIVE_CONV_LIMIT


def object_probability(model, crop_input: torch.Tensor) -> torch.Tensor:
    """The object's probability ``(1, 1, *spatial)`` from the network's logits (sigmoid of 1 channel, or softmax[1])."""
    network = model.network
    if _needs_batch_of_two(network, crop_input):
        logits = network(crop_input.expand(2, *crop_input.shape[1:]))[:1]
    else:
        logits = network(crop_input)
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:2]


# Runners of this process by (runtime, weights hash, input shape): a click costs a hash of the weights, not an
# export check or a new session. A few entries: one per model and crop size in use.
_RUNNERS: OrderedDict[tuple, object] = OrderedDict()
_RUNNERS_KEPT = 4


def _runtime_probability(model, x: torch.Tensor, runtime: str) -> torch.Tensor:
    """:func:`object_probability` with the network run by ``runtime`` (CPU), its runner kept for the next click."""
    from segarch.runtimes import make_runner, weights_sha256

    key = (runtime, weights_sha256(model.network), tuple(x.shape))
    runner = _RUNNERS.get(key)
    if runner is None:
        runner = make_runner(model, torch.device("cpu"), None, runtime, tuple(x.shape[2:]))
        _RUNNERS[key] = runner
        while len(_RUNNERS) > _RUNNERS_KEPT:
            _RUNNERS.popitem(last=False)
    _RUNNERS.move_to_end(key)
    logits = torch.from_numpy(runner(x.numpy(), 1))
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:2]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # scipy comes with napari, a dependency of the project

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def _previous_crop(previous, spatial_shape, start, stop) -> np.ndarray:
    shape = tuple(int(v) for v in getattr(previous, "shape", np.shape(previous)))
    if shape != tuple(spatial_shape):
        raise ValueError(f"`previous` must be the object's mask over the whole image, shape {tuple(spatial_shape)}, "
                         f"got shape {shape}.")
    return np.asarray(compute_here(previous[tuple(slice(a, b) for a, b in zip(start, stop))])) != 0


def segment_from_points(model, image, points, *, positive=None, negative=None, previous=None,
                        axes: str | None = None, margin: float | None = None,
                        size: int | None = None, sigma: float | None = None, threshold: float = 0.5,
                        largest_component: bool = True, return_crop: bool = False, device: str | None = None,
                        runtime: str = "torch", pixel_size=None):
    """Segment one object from its extreme points (Maninis et al. 2018, arXiv:1711.09081).

    The points' bounding box, relaxed by ``margin``, is read from the image (only that region: Dask,
    Zarr and other lazy arrays are sliced, never loaded whole), normalised, resized to ``size``, given a
    channel of Gaussians at the points and run through the network; the object's probability is resized
    back to the crop, thresholded and pasted into place.

    Args:
        model: an interactive :class:`segarch.Model` (e.g. ``segarch.pretrained.load("dextr_light.objects2d")``),
            or a reference to one: shipped weights' name, ``"session:NAME"`` or a model file; its ``in_channels``
            are the image's channels + 1.
        image: ``(*spatial)`` or with a channel axis (``(C, *spatial)`` or ``(*spatial, C)``): NumPy, Dask,
            Zarr or anything sliceable.
        points: ``(N, spatial_dims)`` pixel coordinates in the image's spatial axis order, at least 4 in
            2D (left, right, top, bottom, in any order) and 6 in 3D.
        positive: corrective clicks on parts the mask misses, ``(N, spatial_dims)`` pixel coordinates inside the
            points' crop (a model trained with corrections only, e.g. the shipped light models).
        negative: corrective clicks on parts the mask wrongly holds; they need ``previous``.
        previous: the object's current mask (the image's spatial shape, NumPy/Dask/Zarr: only the crop is read),
            usually the last result; the network refines it with the clicks.
        axes: the image's axes, e.g. ``"YX"``, ``"CYX"``, ``"ZYXC"`` (default: from its shape).
        margin: the crop's margin as a fraction of the points' largest extent (default 0.15, at least 4 px).
        size: the network's input size per axis (default 64 in 2D and 32 in 3D for the light model,
            512 for the paper's).
        sigma: the heat map's σ as a fraction of ``size`` (default 0.04 for the light model; 10/512 in the paper).
        threshold: probability above which a pixel is the object.
        largest_component: keep only the largest connected part of the mask.
        return_crop: return ``(crop_mask, offset)`` (the mask over the crop and the crop's start), for
            images too large for a full-size mask.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` for the network (default: where its
            weights are; see :func:`segarch.devices.resolve_device`).
        runtime: what runs the network, as in :func:`segarch.predict`: ``"torch"``, ``"onnxruntime"``,
            ``"openvino"`` or ``"auto"`` (CPU; the export for this crop size is made once and cached, the runner
            kept in the process for the next click).
        pixel_size: the image's pixel/voxel size, one number or one per spatial axis (``ZYX`` order), e.g.
            ``(4, 1, 1)`` for slices 4 times as thick as the pixels are wide (a napari layer's ``scale``, an OME-TIFF's
            physical sizes). When its shape differs from the voxel size the model was trained at
            (``model.pixel_size``, e.g. ``[1, 1, 1]`` for the shipped 3D models), the crop (margin included) is
            resampled to the model's voxels before the network and the mask back; the log says so. ``None``: the
            image is taken at the model's voxel size.

    Returns:
        A boolean mask with the image's spatial shape, or ``(crop_mask, offset)`` with ``return_crop``.

    Raises:
        ValueError: too few points, a point outside the image, degenerate points (all equal), an image
            whose channels or dimensionality do not fit the model, a click outside the image or the object's
            crop, a negative click without an object (``previous`` missing or empty there), corrections for a
            model not trained with them, a bad option, or a ``pixel_size`` that is not one positive number or one
            per spatial axis, or one for a model that records no training voxel size.

    Examples::

        >>> model = segarch.pretrained.load("dextr_light.objects2d")
        >>> mask = segment_from_points(model, image, [[40, 12], [41, 80], [10, 45], [70, 50]])
        >>> mask = segment_from_points(model, image, points, positive=[[30, 40]], previous=mask)  # add a part
    """
    model = resolve_prompt_model(model)
    check_runtime(runtime)
    dims = model.spatial_dims
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise ValueError(f"`threshold` must be a number in (0, 1), got {threshold!r}.")
    settings = settings_for(model, size=size, margin=margin, sigma=sigma)
    channels = model.in_channels - settings.guidance_channels
    if channels < 1:
        raise ValueError(f"`model` takes {model.in_channels} input channel(s); an extreme-point model takes the "
                         f"image's channels + {settings.guidance_channels} guidance channel(s).")
    corrected = any(v is not None for v in (positive, negative, previous))
    if corrected and not settings.corrections:
        raise ValueError("`positive`, `negative` and `previous` need a model trained with corrective clicks (its "
                         "prompt recipe has corrections=True, e.g. the shipped dextr_light models); this one takes "
                         "extreme points only.")
    shape = tuple(int(s) for s in image.shape)
    ax = _image_axes(shape, axes, dims, channels)
    spatial_axes = [ax.index(a) for a in "ZYX"[-dims:]]
    spatial_shape = tuple(shape[i] for i in spatial_axes)
    n_channels = shape[ax.index("C")] if "C" in ax else 1
    if n_channels != channels:
        raise ValueError(f"The image has {n_channels} channel(s) (axes {ax!r}, shape {shape}), but the model takes "
                         f"{channels} image channel(s) + 1 heat map.")
    pts = check_points(points, spatial_shape)
    if pixel_size is not None and not getattr(model, "pixel_size", None):
        raise ValueError(f"`pixel_size`={pixel_size!r} says the image's voxel size, but the model records no "
                         "training voxel size (`model.pixel_size`) to resample the crop to; leave it unset.")
    scale = voxel_scale(pixel_size, getattr(model, "pixel_size", None), dims)
    start, stop = scaled_crop_box(pts, spatial_shape, settings, scale)  # the margin in the model's voxels
    # Read only the crop: slicing a Dask/Zarr array touches only the chunks under it.
    index = [slice(None)] * len(shape)
    for i, s0, s1 in zip(spatial_axes, start, stop):
        index[i] = slice(s0, s1)
    crop = compute_here(image[tuple(index)])  # safe beside napari's cache (another thread may be slicing)
    order = ([ax.index("C")] if "C" in ax else []) + spatial_axes
    crop = np.transpose(crop, order) if "C" in ax else np.transpose(crop, spatial_axes)[None]
    crop_shape = crop.shape[1:]
    clicks = {}
    for name, given in (("positive", positive), ("negative", negative)):
        clicks[name] = np.rint(check_clicks(given, name, start, stop, spatial_shape)) - np.asarray(start)
    before = None if previous is None else _previous_crop(previous, spatial_shape, start, stop)
    if len(clicks["negative"]) and (before is None or not before.any()):
        raise ValueError("`negative` clicks remove part of an object, but there is no object yet: pass `previous`, "
                         "the object's current mask (non-empty inside the extreme points' crop).")
    in_crop = {"points": np.rint(pts) - np.asarray(start), **clicks}
    if scale is not None:  # the crop at the model's voxel size; points and clicks follow (pixel centres aligned)
        resampled = tuple(max(1, int(round(n * f))) for n, f in zip(crop_shape, scale))
        factor = np.asarray(resampled, np.float64) / np.asarray(crop_shape, np.float64)
        crop = resample(crop, resampled)
        in_crop = {k: (v + 0.5) * factor - 0.5 for k, v in in_crop.items()}
        before = None if before is None else resample(before.astype(np.float32), resampled)
        log.info("crop %s at voxel size %s resampled to %s at the model's voxel size %s; mask resampled back",
                 tuple(crop_shape), tuple(np.broadcast_to(np.asarray(pixel_size, float), (dims,))), resampled,
                 tuple(model.pixel_size))
    x = prompt_input(crop, in_crop["points"], settings, positive=in_crop["positive"],
                     negative=in_crop["negative"], previous=before)
    net = model.network
    net.eval()
    dev = resolve_device(device) if device is not None else next(net.parameters()).device
    if runtime == "torch" and next(net.parameters()).device != dev:
        net.to(dev)  # the model stays there: the next click (device=None) runs where this one did
    with torch.no_grad():
        if runtime == "torch":
            prob = object_probability(model, x.to(dev)).float().cpu()
        else:
            prob = _runtime_probability(model, x.float().cpu(), runtime)
        prob = resize(prob, crop_shape)[0, 0].numpy()
    mask = prob > threshold
    if largest_component and mask.any():
        mask = _largest_component(mask)
    if return_crop:
        return mask, tuple(start)
    full = np.zeros(spatial_shape, bool)
    full[tuple(slice(s0, s1) for s0, s1 in zip(start, stop))] = mask
    return full
