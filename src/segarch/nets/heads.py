"""Where one tensor of logits is needed (tiled prediction), refuse the zoo's multi-head networks by name.

Kept apart from the heads contract (:mod:`segarch.nets._heads`) so callers above the zoo (the tiling engine)
reach it under a public name.
"""

from __future__ import annotations

from segarch.nets._heads import MultiHeadNet

__all__ = ["check_single_output"]

#: How to group each multi-head architecture's outputs into objects, for the messages of :func:`check_single_output`.
_DECODERS = {"panoptic_deeplab": "segarch.instances.panoptic.PanopticDeepLabDecoder",
             "deeperlab": "segarch.instances.deeperlab.DeeperLabDecoder"}


def check_single_output(network, architecture: str | None = None, purpose: str = "segarch.predict") -> None:
    """Refuse a network whose ``forward`` returns several named heads (the zoo's panoptic and instance networks)
    where one tensor of logits is needed (tiled prediction: ``purpose``).

    ``architecture`` names it in the message (a zoo name; found from the network's class when ``None``). A
    ``ValueError`` names the architecture, its heads, what ``purpose`` runs and how to decode the heads instead.
    """
    from segarch import zoo

    if getattr(network, "is_detector", False):  # Mask R-CNN's family: detections, not a tensor of logits
        if architecture is None:
            architecture = next((c.name for c in zoo.cards() if c.builder is type(network)), type(network).__name__)
        raise ValueError(
            f"`model` is {architecture!r}, a detector whose forward returns per image boxes, scores, classes and "
            f"masks: {purpose} runs networks that return one tensor of logits (zoo architectures of task "
            f"'semantic', segarch.zoo.names('semantic') lists them); wrap it in "
            f"segarch.instances.detections.DetectionsAsClasses and pass output='instances', decoder='boundary' "
            f"(tiles' detections as classes, stitched across seams), or paint one image's detections with "
            f"segarch.instances.detections.labels_from_detections"
            + ("; fuse one image's outputs into a panoptic result with "
               "segarch.instances.efficientps.EfficientPSFusion." if architecture == "efficientps" else "."))
    if not isinstance(network, MultiHeadNet):
        return

    if architecture is None:
        architecture = next((c.name for c in zoo.cards() if c.builder is type(network)), type(network).__name__)
    task = zoo.card(architecture).task if architecture in zoo.names() else "multi-head"
    decoder = _DECODERS.get(architecture)
    how = (f"; run the network on an image and group its heads with {decoder}" if decoder
           else "; its heads cannot be decoded into labels yet")
    raise ValueError(
        f"`model` is {architecture!r}, a {task} architecture whose forward returns several heads "
        f"({', '.join(h.name for h in network.heads)}): {purpose} runs networks that return one tensor of logits "
        f"(zoo architectures of task 'semantic', {', '.join(repr(n) for n in zoo.names('semantic')[:3])}, …; "
        f"segarch.zoo.names('semantic') lists them){how}.")
