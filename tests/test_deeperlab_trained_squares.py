"""DeeperLab trained for a few steps on two well separated squares: its decoded instances are two objects.

The issue's check for every model that produces instances, here through DeeperLab's keypoint grouping
(:class:`segarch.instances.deeperlab.DeeperLabDecoder`), trained with the panoptic task's targets and loss
(:func:`segarch.training.panoptic.panoptic_loss`: offsets averaged over the pixels where they are defined, as
PersonLab's). Measured with this training (300 Adam steps on one 64² image, test configuration, keypoint radius
16): draws 0-9 all gave two objects, each square at least 93% one object and at most 1.7% of the background
taken; draw 0 is held. Before (offsets averaged over the whole image, unnormalised votes, no instance scores)
draw 0 gave 11 objects: its offsets were about 5 pixels off and every scattered vote was a candidate.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segarch import zoo
from segarch.instances.deeperlab import DeeperLabDecoder
from segarch.training.panoptic import panoptic_loss, panoptic_targets
from detector_helpers import assert_two_squares_decoded, two_squares

pytestmark = pytest.mark.slow  # 300 training steps, about 10 s

RADIUS = 16.0


def train_deeperlab(image: np.ndarray, labels: np.ndarray, steps: int = 300, radius: float = RADIUS):
    """The test configuration of ``deeperlab`` trained on one image (class 1: the squares) with the panoptic
    task's targets and loss; returns its outputs on that image."""
    net = train_deeperlab_network(image, labels, steps, radius)
    with torch.no_grad():
        return net(torch.from_numpy(image)[None, None])


def train_deeperlab_network(image: np.ndarray, labels: np.ndarray, steps: int = 300, radius: float = RADIUS):
    """:func:`train_deeperlab`'s network itself (in eval mode)."""
    torch.manual_seed(0)
    net = zoo.create("deeperlab", in_channels=1, out_channels=2, **zoo.card("deeperlab").test_config)
    x = torch.from_numpy(image)[None, None]
    instances = torch.from_numpy(labels)[None]
    targets = panoptic_targets(net, (instances > 0).long(), instances, radius=radius)
    opt = torch.optim.Adam(net.parameters(), lr=zoo.card("deeperlab").test_lr)
    for _ in range(steps):
        opt.zero_grad()
        panoptic_loss(net(x), targets, radius=radius).backward()
        opt.step()
    return net.eval()


def test_trained_for_a_few_steps_on_two_squares_it_decodes_two_objects():
    image, labels = two_squares(np.random.default_rng(0))
    result = DeeperLabDecoder(thing_classes=(1,), radius=RADIUS)(train_deeperlab(image, labels))
    assert_two_squares_decoded(result, labels, covered=0.9)
