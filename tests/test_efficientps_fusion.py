"""EfficientPS's panoptic fusion on hand-made logits: each rule of the paper (confidence, overlap, the adaptive
fusion's values, stuff from the semantic head, small stuff to void) with the pixels it must give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segarch.instances.efficientps import EfficientPSFusion, fused_logits


def test_fused_logits_are_the_papers_formula():
    a, b = torch.tensor([2.0, 4.0, -3.0]), torch.tensor([-1.0, 3.0, 1.0])
    expected = [(1 / (1 + np.exp(-x)) + 1 / (1 + np.exp(-y))) * (x + y) for x, y in zip(a.tolist(), b.tolist())]
    assert torch.allclose(fused_logits(a, b), torch.tensor(expected, dtype=torch.float32))
    # agreement grows the logit beyond the sum; disagreement shrinks it
    assert fused_logits(torch.tensor(4.0), torch.tensor(3.0)) > 7
    assert fused_logits(torch.tensor(4.0), torch.tensor(-3.0)) < 1.1  # (σ(4) + σ(-3))·1 = 1.03


def _scene():
    """16×16, classes 0 and 1 stuff (left and right halves), 2 a thing, 3 stuff (4 pixels); five detections."""
    semantic = torch.zeros(4, 16, 16)
    semantic[0, :, :8] = 1.0
    semantic[1, :, 8:] = 1.0
    semantic[2, 2:6, 2:6] = 3.0  # object A
    semantic[2, 10:14, 10:14] = 3.0  # object C
    semantic[2, 2:5, 12:15] = 3.0  # a thing the detector is not confident about: void
    semantic[0, 10:14, 6] = 2.0  # stuff that outweighs object D's weak mask
    semantic[3, 14:16, 0:2] = 3.0  # a 4-pixel region of stuff class 3
    boxes, scores, logits = [], [], []

    def detection(box, score, region, value):
        mask = torch.zeros(16, 16)
        mask[region] = value
        boxes.append(box)
        scores.append(score)
        logits.append(mask)

    detection([2, 2, 6, 6], 0.9, np.s_[2:6, 2:6], 4.0)  # A
    detection([2, 2, 6, 8], 0.8, np.s_[2:6, 3:8], 4.0)  # 12 of its 20 pixels on A: dropped (overlap 0.6 > 0.5)
    detection([10, 10, 14, 14], 0.7, np.s_[10:14, 10:14], 4.0)  # C
    detection([10, 6, 14, 11], 0.6, np.s_[10:14, 6:11], 1.0)  # D: 4 of its 20 pixels on C (0.2): kept
    detection([2, 12, 5, 15], 0.4, np.s_[2:5, 12:15], 4.0)  # below the confidence threshold: dropped
    return {"semantic": semantic, "boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.full((5,), 2), "mask_logits": torch.stack(logits)}


def test_fusion_rules_give_the_expected_pixels():
    result = EfficientPSFusion(thing_classes=(2,))(_scene())
    instances, semantic = result.instances, result.semantic
    expected = np.zeros((16, 16), np.int64)
    expected[2:6, 2:6] = 1  # A, highest score
    expected[10:14, 10:14] = 2  # C: in column 10 it beats D, (σ(4)+σ(3))·7 > (σ(1)+σ(3))·4
    expected[10:14, 7:10] = 3  # D: (σ(1)+σ(0))·1 = 1.23 beats the stuff logit 1, but not 2 in column 6
    assert (instances == expected).all()
    assert result.classes.tolist() == [2, 2, 2]
    assert result.centers.tolist() == [[4, 4], [12, 12], [12, 8]]
    stuff = np.where(np.arange(16)[None, :] < 8, 0, 1) * np.ones((16, 1), np.int64)
    stuff[14:16, 0:2] = 3
    stuff[2:5, 12:15] = -1  # the semantic head's thing pixels that no kept object took: void
    assert (semantic[expected == 0] == stuff[expected == 0]).all()
    assert (semantic[expected > 0] == 2).all()
    assert result.panoptic[3, 3] == 2001 and result.panoptic[12, 12] == 2002 and result.panoptic[0, 0] == 0
    assert result.panoptic[0, 15] == 1000 and result.panoptic[3, 13] == -1
    # stuff classes of fewer pixels than stuff_area become void; the rest stays
    small = EfficientPSFusion(thing_classes=(2,), stuff_area=5)(_scene())
    assert (small.semantic[14:16, 0:2] == -1).all() and (small.semantic[0, :8] == 0).all()
    # a lower confidence threshold keeps the 0.4 detection: the void thing becomes an object
    loose = EfficientPSFusion(thing_classes=(2,), confidence=0.3)(_scene())
    assert loose.instances.max() == 4 and (loose.instances[2:5, 12:15] == 4).all()
    # overlap 0.7 keeps the duplicate, which then wins only where its fused logit beats A's (nowhere: equal
    # logits, A first) and the stuff's (columns 6-7 of its box)
    keep = EfficientPSFusion(thing_classes=(2,), overlap=0.7)(_scene())
    assert (keep.instances[2:6, 6:8] == 2).all() and (keep.instances[2:6, 2:6] == 1).all()


def test_an_object_never_claims_pixels_outside_its_box():
    scene = _scene()
    scene["semantic"][:2] = -5.0  # every stuff logit negative: the paper's zero padding would give them away
    result = EfficientPSFusion(thing_classes=(2,))(scene)
    assert (result.instances[:, :2] == 0).all() and (result.instances[:2] == 0).all()
    assert result.instances.max() == 3


def test_no_detections_and_bad_input():
    scene = _scene()
    empty = {**scene, "boxes": scene["boxes"][:0], "scores": scene["scores"][:0], "labels": scene["labels"][:0],
             "mask_logits": scene["mask_logits"][:0]}
    result = EfficientPSFusion(thing_classes=(2,))(empty)
    assert result.instances.max() == 0 and (result.semantic[2:6, 2:6] == -1).all()
    with pytest.raises(ValueError, match=r"missing \['mask_logits'\]"):
        EfficientPSFusion()({k: v for k, v in scene.items() if k != "mask_logits"})
    with pytest.raises(ValueError, match="`confidence` must be a number in"):
        EfficientPSFusion(confidence=1.5)
    with pytest.raises(ValueError, match=r"`outputs\['labels'\]` must be thing classes \(1,\)"):
        EfficientPSFusion(thing_classes=(1,))(scene)
    with pytest.raises(ValueError, match="mask logits"):
        EfficientPSFusion(thing_classes=(2,))({**scene, "mask_logits": scene["mask_logits"][:, :8]})
