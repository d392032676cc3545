"""Every registered architecture through one shared tester (shape, gradients, parameters, training).

A new architecture needs no test code here: registering it with a card (and a small
``test_config``) puts it through every check below, according to its task. Panoptic and instance networks
return a dict of named tensors, one per head (:mod:`segarch.nets._heads`): each head's shape is checked, every
parameter gets a gradient, and the training steps lower a loss made of all heads. Detectors (Mask R-CNN) give
per image boxes, scores, classes and masks in eval mode (checked) and their losses in train mode (each parameter's
gradient, the training steps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segarch import zoo
from segarch.layers.checks import padded_shape

MULTI_HEAD = ("panoptic", "instance")
#: Two-stage detectors (Mask R-CNN and its family): eval forward gives detections, train forward gives losses.
DETECTORS = {n for n in zoo.names() if getattr(zoo.card(n).builder, "is_detector", False)}
CASES = [(name, dims) for name in zoo.names() for dims in zoo.card(name).spatial_dims]
DENSE = [(n, d) for n, d in CASES if zoo.card(n).task != "backbone"]


def _build(name: str, dims: int, in_channels: int = 1, out_channels: int = 3):
    entry = zoo.card(name)
    return zoo.create(name, spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, **entry.test_config)


def _expected_shape(name: str, batch: int, out_channels: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    if zoo.card(name).task == "backbone":  # built by name, a backbone is its image classifier
        return (batch, out_channels)
    return (batch, out_channels, *spatial)


@pytest.mark.slow
@pytest.mark.parametrize("name,dims", CASES)
def test_forward_shape_and_backward(name, dims):
    torch.manual_seed(0)
    rng = np.random.default_rng()
    net = _build(name, dims, in_channels=2, out_channels=3)
    divisor = net.size_divisor
    assert divisor == zoo.card(name).size_divisor
    odd = (33, 47) if dims == 2 else (17, 33, 19)  # odd sizes, padded to the divisor as the tiler does
    shape = padded_shape(odd, divisor)
    x = torch.from_numpy(rng.normal(size=(2, 2, *shape)).astype(np.float32))
    if name in DETECTORS:
        tensors = _detector_outputs(net, x, rng)
    elif zoo.card(name).task in MULTI_HEAD:
        y = net(x)
        assert list(y) == [h.name for h in net.heads]
        assert {k: tuple(v.shape) for k, v in y.items()} == net.output_shapes(x.shape)
        tensors = list(y.values())
    else:
        y = net(x)
        assert y.shape == _expected_shape(name, 2, 3, shape)
        tensors = [y]
    for t in tensors:
        assert torch.isfinite(t).all()
    sum(t.square().mean() for t in tensors).backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


def _detector_outputs(net, x, rng) -> list[torch.Tensor]:
    """A detector's detections in eval mode (checked), then its losses in train mode on two random boxes per image."""
    from segarch.instances.detections import detection_targets

    spatial = tuple(x.shape[2:])
    net.eval()
    with torch.no_grad():
        detections = net(x)
    assert len(detections) == x.shape[0]
    for found in detections:
        n = len(found["scores"])
        assert found["boxes"].shape == (n, 2 * len(spatial)) and found["masks"].shape == (n, *spatial)
        assert (found["labels"] >= 1).all() and (found["labels"] < 3).all()
        assert ((found["masks"] >= 0) & (found["masks"] <= 1)).all()
    net.train()
    targets = []
    for _ in range(x.shape[0]):
        labels = np.zeros(spatial, np.int64)
        for i in (1, 2):  # two random boxes, the second may cover part of the first
            start = [int(rng.integers(0, s - 8)) for s in spatial]
            labels[tuple(slice(a, a + int(rng.integers(4, 9))) for a in start)] = i
        targets.append(detection_targets(labels, classes=np.where(labels > 0, labels, 0)))
    return list(net(x, targets).values())


@pytest.mark.slow
@pytest.mark.parametrize("name,dims", DENSE)
def test_unpadded_input_names_divisor_and_padded_shape(name, dims):
    net = _build(name, dims)
    if net.size_divisor == 1:
        pytest.skip("any input size is accepted")
    bad = (net.size_divisor + 3,) * dims
    with pytest.raises(ValueError, match=f"multiples of {net.size_divisor}") as err:
        net(torch.zeros(1, 1, *bad))
    assert str(padded_shape(bad, net.size_divisor)) in str(err.value)


@pytest.mark.parametrize("name", zoo.names())
def test_parameter_count_matches_paper(name):
    entry = zoo.card(name)
    assert entry.paper_params is not None, f"{name}: the card must give the paper's count or pin one"
    counted = zoo.parameter_count(name) / 1e6
    assert abs(counted - entry.paper_params) / entry.paper_params <= 0.05, (counted, entry.paper_params)


def test_readme_zoo_table_is_what_segarch_zoo_markdown_prints(capsys):
    from segarch.cli import main

    assert main(["zoo", "--markdown"]) == 0  # the counts are cached by the parameter-count test above
    printed = capsys.readouterr().out.strip().splitlines()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    assert printed[0] in readme, "README.md has no zoo table: paste `segarch zoo --markdown` into its zoo section"
    start = readme.index(printed[0])
    table = readme[start: start + len(printed) + 1]
    assert table[-1] == "", "the README's zoo table has more rows than `segarch zoo --markdown` prints"
    assert table[:-1] == printed, "README.md's zoo table is out of date: paste `segarch zoo --markdown` over it"


def _tiny_task(task: str):
    """Generated nuclei: per-pixel foreground for dense models, 'more than 6 nuclei' for classifiers, the
    instance labels for panoptic and instance models."""
    from segarch.samples import nuclei

    images, targets = [], []
    for seed in range(4):
        image, labels = nuclei((32, 32), radius=(3, 6), count=3 + 3 * seed, seed=seed)
        images.append((image - image.mean()) / image.std())
        if task in MULTI_HEAD:
            targets.append(labels)
        else:
            targets.append(labels > 0 if task != "backbone" else np.int64(labels.max() > 6))
    x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
    return x, torch.from_numpy(np.stack(targets).astype(np.int64))


def _head_targets(net, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """A target for each head of a multi-head net from instance labels ``(B, *S)``: by the head's name where the
    net's target maker names it (DeeperLab's keypoint heads), otherwise by its kind."""
    from segarch.instances.deeperlab import keypoint_targets
    from segarch.instances.panoptic import center_offset_targets

    kinds = {h.kind for h in net.heads}
    made = {"semantic": (labels > 0).long()}
    if "center" in kinds:
        per_image = [center_offset_targets(lab.numpy(), sigma=2.0) for lab in labels]
        made["center"] = torch.from_numpy(np.stack([c for c, _ in per_image]))
        made["offset"] = torch.from_numpy(np.stack([o for _, o in per_image]))
    named = {}
    if "keypoints" in kinds:
        per_image = [keypoint_targets(lab.numpy(), radius=3.0) for lab in labels]
        named = {k: torch.from_numpy(np.stack([t[k] for t in per_image])) for k in per_image[0]}
    foreground = (labels > 0).float()[:, None]
    targets = {}
    for head in net.heads:
        if head.name in named:
            targets[head.name] = named[head.name]
            continue
        if head.kind in ("objectness", "boxes"):  # region proposals: anchors over foreground, boxes kept still
            pool = torch.nn.functional.max_pool2d(foreground, head.stride)
            targets[head.name] = (pool.repeat(1, head.channels, 1, 1) if head.kind == "objectness"
                                  else torch.zeros(pool.shape[0], head.channels, *pool.shape[2:]))
            continue
        assert head.kind in made, f"the shared tester has no target for heads of kind {head.kind!r}: add one"
        targets[head.name] = made[head.kind]
    return targets


def _multi_head_loss(net, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on semantic heads, squared error on centre heatmaps, binary cross-entropy on keypoint
    heatmaps and region-proposal objectness (logits), L1 on offsets (pixels / 8) and box deltas."""
    losses = {"semantic": lambda y, t: torch.nn.functional.cross_entropy(y, t),
              "keypoints": lambda y, t: torch.nn.functional.binary_cross_entropy_with_logits(y, t),
              "objectness": lambda y, t: torch.nn.functional.binary_cross_entropy_with_logits(y, t),
              "boxes": lambda y, t: torch.nn.functional.l1_loss(y, t),
              "center": lambda y, t: 10 * torch.nn.functional.mse_loss(y, t),
              "offset": lambda y, t: torch.nn.functional.l1_loss(y / 8, t / 8)}
    return sum(losses[h.kind](outputs[h.name], targets[h.name]) for h in net.heads)


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names())
def test_a_few_training_steps_lower_the_loss(name):
    torch.manual_seed(0)
    net = _build(name, 2, out_channels=2)
    task = zoo.card(name).task
    x, t = _tiny_task(task)
    if name in DETECTORS:
        from segarch.instances.detections import detection_targets

        targets = [detection_targets(labels.numpy()) for labels in t]
    elif task in MULTI_HEAD:
        targets = _head_targets(net, t)
    opt = torch.optim.Adam(net.parameters(), lr=zoo.card(name).test_lr)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        if name in DETECTORS:
            loss = sum(net(x, targets).values())
        elif task in MULTI_HEAD:
            loss = _multi_head_loss(net, net(x), targets)
        else:
            loss = torch.nn.functional.cross_entropy(net(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # a detector's loss sums RPN objectness and boxes, classification, boxes and masks; its box terms start
    # near zero and grow as proposals begin to match, so the sum falls more slowly (with group norm, seeds 0-1:
    # 0.58-0.69 of the start after 30 steps)
    bound = 0.75 if name in DETECTORS else 0.6
    assert np.mean(losses[-5:]) < bound * np.mean(losses[:3]), losses
