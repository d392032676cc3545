"""One axes alphabet and one guesser (segarch.axes), used by io, predict, training, prompts and the widgets."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from segarch.axes import check_axes, guess_axes, resolve_axes


@pytest.mark.parametrize("shape, axes", [((64, 48), "YX"), ((5, 64, 48), "ZYX"), ((64, 48, 3), "YXC"),
                                          ((2, 5, 64, 48), "TZYX"), ((2, 3, 5, 64, 48), "TCZYX")])
def test_without_a_model_as_the_readers_read(shape, axes):
    assert guess_axes(shape) == axes
    assert segarch.io.read_npy  # the readers use the same function
    assert segarch.io.guess_axes is guess_axes


@pytest.mark.parametrize("shape, dims, channels, axes", [
    ((40, 64, 64), 2, 1, "ZYX"),        # a stack for a 2D grey model: slices
    ((6, 40, 64, 64), 2, 1, "TZYX"),
    ((6, 40, 64, 64), 3, 1, "TZYX"),    # a time series of volumes
    ((3, 64, 64), 2, 3, "CYX"),
    ((64, 64, 3), 2, 3, "YXC"),
    ((2, 40, 64, 64), 3, 2, "CZYX"),
    ((40, 64, 64, 2), 3, 2, "ZYXC"),
    ((64, 64), 2, 1, "YX"),
])
def test_for_a_model(shape, dims, channels, axes):
    assert guess_axes(shape, spatial_dims=dims, in_channels=channels) == axes
    assert resolve_axes(shape, None, dims, channels).axes == axes


@pytest.mark.parametrize("shape, dims, channels", [((4, 5, 40, 40), 2, 2), ((40, 40), 3, 1),
                                                   ((1, 2, 3, 4, 5, 6), 2, 1)])
def test_a_shape_that_does_not_say_asks_for_axes(shape, dims, channels):
    with pytest.raises(ValueError, match="`axes` cannot be inferred .* pass `axes`"):
        guess_axes(shape, spatial_dims=dims, in_channels=channels)


def test_one_answer_everywhere():
    # The same array and model: predict, training and the Segment dock's suggestion agree.
    from segarch.training.data import as_sources

    image = np.random.default_rng().random((3, 48, 40)).astype(np.float32)
    model = segarch.Model.from_zoo("unet", in_channels=3, features=(4, 8, 16))
    probabilities = segarch.predict(model, image, output="probabilities", tile=32)
    assert probabilities.shape == (2, 48, 40)  # read as CYX, not as a stack of 3 slices
    source = as_sources(image, np.zeros((48, 40), np.uint8), axes=None, mask=True, spatial_dims=2, in_channels=3)[0]
    assert source.image.shape == (3, 48, 40) and source.n_stack == 0
    stack = np.zeros((5, 48, 40), np.float32)
    grey = segarch.Model.from_zoo("unet", features=(4, 8, 16))
    assert segarch.predict(grey, stack, tile=32).shape == (5, 48, 40)  # ZYX: five slices
    source = as_sources(stack, np.zeros((5, 48, 40), np.uint8), axes=None, mask=True, spatial_dims=2, in_channels=1)[0]
    assert source.n_stack == 1  # five images


def test_one_alphabet():
    assert check_axes("cyx", 3) == "CYX"
    with pytest.raises(ValueError, match="letters from 'TCZYX'"):
        check_axes("SYX", 3)
    with pytest.raises(ValueError, match="letters from 'TCZYX'"):
        segarch.train("unet", np.zeros((2, 32, 32), np.float32), np.ones((2, 32, 32), np.uint8), axes="SYX", steps=1)
