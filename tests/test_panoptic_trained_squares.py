"""Panoptic-DeepLab trained for a few steps on two well separated squares: its decoded instances are two objects.

The issue's check for every model that produces instances, here for a panoptic network through its own grouping
decoder (the detectors' version is in tests/test_zoo_mask_rcnn.py and the PANet/PointRend/EfficientPS files).
Measured with this training (300 Adam steps on one 64² image, test configuration): draws 0-4 gave 2, 2, 3, 2, 2
objects (each square at least 77% one object in 4 of 5; draw 3 covers one square by 38% only); draw 0 is held.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segarch import zoo
from segarch.instances.panoptic import PanopticDeepLabDecoder, center_offset_targets
from detector_helpers import assert_two_squares_decoded, two_squares

pytestmark = pytest.mark.slow  # 300 training steps, about 10-20 s


def _train_panoptic_deeplab(image: np.ndarray, labels: np.ndarray, steps: int = 300):
    """The test configuration of ``panoptic_deeplab`` trained on one image with its semantic, centre and offset
    targets (cross-entropy, 10 × squared error, L1 of offsets / 8: the shared tester's loss of all heads)."""
    torch.manual_seed(0)
    net = zoo.create("panoptic_deeplab", in_channels=1, out_channels=2, **zoo.card("panoptic_deeplab").test_config)
    x = torch.from_numpy(image)[None, None]
    semantic = torch.from_numpy((labels > 0).astype(np.int64))[None]
    center, offset = (torch.from_numpy(t)[None] for t in center_offset_targets(labels, sigma=4))
    opt = torch.optim.Adam(net.parameters(), lr=zoo.card("panoptic_deeplab").test_lr)
    for _ in range(steps):
        opt.zero_grad()
        out = net(x)
        loss = (F.cross_entropy(out["semantic"], semantic) + 10 * F.mse_loss(out["center"], center)
                + F.l1_loss(out["offset"] / 8, offset / 8))
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return net(x)


def test_trained_for_a_few_steps_on_two_squares_it_decodes_two_objects():
    image, labels = two_squares(np.random.default_rng(0))
    result = PanopticDeepLabDecoder(thing_classes=(1,))(_train_panoptic_deeplab(image, labels))
    assert_two_squares_decoded(result, labels, covered=0.7)
