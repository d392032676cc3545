"""segarch.synthetic: the default images stay as they were; the hard options do what they say."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from segarch.synthetic import Conditions, nuclei, nuclei_sample, samples

# A clean scene where every pixel's value is its object's brightness: overlap and debris then show plainly.
CLEAN = dict(radius=(6.0, 9.0), coverage=0.5, irregularity=0.0, touching=1.0, brightness=(0.8, 1.0), texture=0.0,
             background=0.0, gradient=0.0, haze=0.0, blur=0.0, photons=1e7, read_noise=0.0, gain=1.0)


@pytest.mark.parametrize("seed, shape, total, objects, pixels, digest", [
    (0, (96, 80), 9170182.906585693, 5, 771, "6206011737b919ab"),
    (777, (20, 48, 40), 43753898.77113342, 15, 8009, "76a9e5008a452d33"),
])
def test_default_images_are_unchanged(seed, shape, total, objects, pixels, digest):
    # The shipped models' cards and tests were measured on these seeds: the new options must not move them.
    image, labels = nuclei(shape, seed=seed)
    assert labels.dtype == np.uint16 and image.dtype == np.float32
    assert (int(labels.max()), int((labels > 0).sum())) == (objects, pixels)
    assert hashlib.sha256(labels.tobytes()).hexdigest()[:16] == digest
    assert np.isclose(float(image.astype(np.float64).sum()), total, rtol=1e-6)
    sample = nuclei_sample(shape, seed=seed)
    assert np.array_equal(sample.image, image) and sample.spacing == (1.0,) * len(shape)


def _touching_share(labels: np.ndarray) -> float:
    """Share of objects with a face-neighbour of another object."""
    touching = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)
        left, right = a[:-1].ravel(), a[1:].ravel()
        pairs = (left != right) & (left > 0) & (right > 0)
        touching.update(left[pairs].tolist())
        touching.update(right[pairs].tolist())
    return len(touching) / max(1, int(labels.max()))


def test_hard_images_are_crowded_varied_and_reproducible():
    drawn = samples(3, (128, 128), seed=5, hard=True)
    again = samples(3, (128, 128), seed=5, hard=True)
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) for a, b in zip(drawn, again))
    for s in drawn:
        ids = np.unique(s.labels)
        assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, ids.size))  # every object keeps pixels
        assert s.labels.max() >= 10 and _touching_share(s.labels) > 0.3
        assert 0.0 <= s.conditions.overlap <= 0.3 and 0.0 <= s.conditions.debris <= 1.0
    sizes = np.concatenate([np.bincount(s.labels.ravel())[1:] for s in drawn])
    assert sizes.max() > 4 * np.median(sizes[sizes > 20]) / 2  # sizes vary widely
    default = samples(3, (128, 128), seed=5)
    assert np.mean([_touching_share(s.labels) for s in drawn]) > np.mean([_touching_share(s.labels) for s in default])


def test_overlapping_nuclei_add_their_light_and_keep_the_first_label():
    apart = nuclei_sample((128, 128), seed=3, conditions=Conditions(**CLEAN))
    overlapping = nuclei_sample((128, 128), seed=3, conditions=Conditions(**CLEAN, overlap=0.3))
    # Without overlap every pixel shows one nucleus (brightness <= 1); with it, shared pixels add up.
    assert apart.image.max() <= 1.01 and overlapping.image.max() > 1.3
    bright = overlapping.image > 1.05
    assert (overlapping.labels[bright] > 0).all()  # the overlap is labelled (by the first nucleus)


def test_debris_is_unlabelled_light_that_leaves_the_nuclei_unchanged():
    clean = nuclei_sample((128, 128), seed=4, conditions=Conditions(**CLEAN))
    dirty = nuclei_sample((128, 128), seed=4, conditions=Conditions(**CLEAN, debris=1.0))
    assert np.array_equal(clean.labels, dirty.labels)
    background = clean.labels == 0
    assert clean.image[background].max() < 0.01
    specks, count = ndimage.label(dirty.image * background > 0.2)
    assert count >= 5  # bright unlabelled spots in the background


def test_shading_makes_the_illumination_uneven():
    even = {**CLEAN, "brightness": (1.0, 1.0)}  # every nucleus equally bright: only the lighting differs

    def spread(conditions):
        s = nuclei_sample((128, 128), seed=6, conditions=conditions)
        means = ndimage.mean(s.image, s.labels, index=np.arange(1, s.labels.max() + 1))
        return np.ptp(means) / np.mean(means)

    assert spread(Conditions(**even, shading=0.5)) > 3 * spread(Conditions(**even))


def test_anisotropic_voxels_give_fewer_thicker_slices_with_the_voxel_size():
    conditions = Conditions(**{**CLEAN, "radius": (5.0, 7.0), "coverage": 0.15}, z_spacing=2.5, axial_blur=2.0)
    s = nuclei_sample((24, 96, 96), seed=8, conditions=conditions)
    assert s.spacing == (2.5, 1.0, 1.0)
    boxes = [b for b in ndimage.find_objects(s.labels) if b is not None]
    inner = [b for b in boxes if all(0 < sl.start and sl.stop < n for sl, n in zip(b, s.labels.shape))]
    z = np.array([b[0].stop - b[0].start for b in inner], float)
    y = np.array([b[1].stop - b[1].start for b in inner], float)
    # Round-ish in space (nuclei are a bit flatter along Z), so about 2.5x fewer slices than rows.
    assert 0.5 < np.median(z * 2.5 / y) < 1.2 and np.median(z / y) < 0.5
    hard = nuclei_sample((16, 64, 64), seed=1, hard=True)
    assert 1.0 <= hard.spacing[0] <= 3.0 and hard.spacing[1:] == (1.0, 1.0)
    assert hard.conditions.axial_blur >= 1.5


def test_bad_conditions_are_named():
    with pytest.raises(ValueError, match="z_spacing"):
        nuclei_sample((8, 32, 32), conditions=Conditions(z_spacing=0.0))
    with pytest.raises(ValueError, match="`shape`"):
        nuclei_sample((32,))
