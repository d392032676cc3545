"""Networks that only eager PyTorch runs here: detectors (Mask R-CNN, PANet, PointRend, EfficientPS).

A detector returns per image a variable number of boxes and masks, chosen by data-dependent steps (score
thresholds, non-maximum suppression, RoIAlign on the surviving boxes, the panoptic fusion): the ONNX tracer
records the one path its example took (on an untrained or an empty tile: no detection at all), a graph that no
longer reads its input. So ``runtime`` ``"onnxruntime"``/``"openvino"`` are refused for them by name before any
work, and ``"auto"`` runs them in torch, logged.
"""

from __future__ import annotations

import torch

__all__ = ["torch_only_reason", "check_network_runtime"]


def torch_only_reason(network: torch.nn.Module) -> str | None:
    """Why only torch runs ``network`` (a zoo network, or a wrapper around one such as the tiled engine's
    ``DetectionsAsClasses``/``FusionAsChannels``), or ``None`` when it may be exported."""
    if not isinstance(network, torch.nn.Module):
        return None
    for module in network.modules():
        if getattr(module, "is_detector", False):
            name = type(module).__name__
            return (f"{name} is a detector (per image a variable number of boxes and masks, from score thresholds, "
                    f"non-maximum suppression and RoIAlign), which is not exported to ONNX")
    return None


def check_network_runtime(network: torch.nn.Module, runtime: str, precision: str = "fp32") -> None:
    """Refuse, before any work, an explicit ``runtime`` (or int8 ``precision``) that cannot run ``network``.

    Raises:
        ValueError: ``runtime`` is ``"onnxruntime"`` or ``"openvino"``, or ``precision`` is ``"int8"``, for a
            network only torch runs (the message names the parameter, its value and what is allowed).
    """
    reason = torch_only_reason(network)
    if reason is None:
        return
    if runtime in ("onnxruntime", "openvino"):
        raise ValueError(f"`runtime`={runtime!r} cannot run this model: {reason}. Use `runtime`='torch' (or 'auto', "
                         f"which runs it in torch).")
    if precision == "int8":
        raise ValueError(f"`precision`='int8' cannot be used for this model: {reason}, and int8 quantises the "
                         f"ONNX export. Use `precision`='fp32'.")
