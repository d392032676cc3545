"""segarch.instances.predict_instances: the tiled network pass and the block-wise decoding, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import segarch
from segarch.instances import BoundaryDecoder, DistanceDecoder, match, predict_instances
from segarch.synthetic import nuclei_sample


class ProbabilityNet(nn.Module):
    """A pointwise stand-in for a trained network: its input channels are class probabilities, out come their logs.

    Fed a smoothed, noisy one-hot map of a decoder's targets, it outputs what a well trained network
    would; being pointwise, the probabilities ``segarch.predict`` blends from it do not depend on the tiling.
    """

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.probe = conv(channels, 1, 1)  # the engine reads in_channels from the first convolution

    def forward(self, x):
        return torch.log(x.clamp_min(1e-6))


def oracle_model(decoder, spatial_dims: int) -> segarch.Model:
    model = segarch.Model(ProbabilityNet(decoder.channels, spatial_dims), "unet", spatial_dims=spatial_dims,
                          in_channels=decoder.channels, out_channels=decoder.channels,
                          class_names=decoder.class_names, preprocessing=[])
    model.trained = True
    return model


@pytest.mark.slow
@pytest.mark.parametrize("decoder, shape", [(DistanceDecoder(), (230, 210)), (BoundaryDecoder(), (30, 90, 84))])
def test_predict_instances_tiles_then_decodes_into_zarr(tmp_path, decoder, shape):
    import zarr

    from test_instance_blocks import probabilities_for

    s = nuclei_sample(shape, seed=13, hard=True)
    image = probabilities_for(s.labels, decoder, s.spacing)  # (C, *spatial): what a good network outputs
    axes = "CYX" if len(shape) == 2 else "CZYX"
    model = oracle_model(decoder, len(shape))
    tile = 64 if len(shape) == 2 else 32
    probabilities = segarch.predict(model, image, axes=axes, output="probabilities", tile=tile, device="cpu")
    expected = decoder.decode(probabilities)  # the whole image decoded at once
    assert match(s.labels, expected).f1(0.5) > 0.85
    seen = []
    labels, report = predict_instances(model, image, axes=axes, out=tmp_path / "cells.zarr", tile=tile,
                                       block=(96, 80) if len(shape) == 2 else (16, 40, 40),
                                       halo=48 if len(shape) == 2 else 32, device="cpu",
                                       progress=lambda d, t: seen.append((d, t)), return_report=True)
    assert isinstance(labels, zarr.Array) and labels.dtype == np.uint32 and labels.shape == shape
    assert np.array_equal(np.asarray(labels), expected)
    assert report["objects"] == expected.max() and report["merged_across_seams"] > 0
    assert not (tmp_path / "cells.zarr.probabilities").exists()  # the intermediate store is gone
    assert seen[-1][0] == seen[-1][1]
    in_memory = predict_instances(model, image, axes=axes, tile=tile, device="cpu")
    assert isinstance(in_memory, np.ndarray) and np.array_equal(in_memory, expected)


def test_a_real_zoo_network_gives_labels_and_a_semantic_model_is_refused(tmp_path):
    decoder = DistanceDecoder()
    model = segarch.Model.from_zoo("unet", spatial_dims=2, out_channels=decoder.channels,
                                   class_names=decoder.class_names, features=(4, 8, 16, 32))
    image = nuclei_sample((96, 80), seed=1).image
    labels = predict_instances(model, image, device="cpu")
    assert labels.dtype == np.uint32 and labels.shape == image.shape
    ids = np.unique(labels)
    assert np.array_equal(ids[ids > 0], np.arange(1, int((ids > 0).sum()) + 1))  # 1..N, none skipped
    semantic = segarch.Model.from_zoo("unet", spatial_dims=2, out_channels=2, features=(4, 8, 16, 32))
    out = tmp_path / "never.zarr"
    with pytest.raises(ValueError, match="`model` is not an instance model"):
        predict_instances(semantic, image, out=out)
    with pytest.raises(ValueError, match="needs 3 output channels"):
        predict_instances(semantic, image, decoder="boundary", out=out)
    with pytest.raises(ValueError, match="`output` is set by predict_instances"):
        predict_instances(model, image, output="labels")
    with pytest.raises(FileNotFoundError, match="`image`"):
        predict_instances(model, "missing.tif", out=out)
    assert not out.exists() and not (tmp_path / "never.zarr.probabilities").exists()
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("...")
    with pytest.raises(ValueError, match="not a segarch result"):  # refused before the network runs
        predict_instances(model, image, out=foreign, overwrite=True)
    assert not (tmp_path / "thesis.probabilities").exists() and (foreign / "chapter1.tex").exists()


@pytest.mark.slow
def test_segarch_train_on_decoder_targets_makes_an_instance_model(tmp_path):
    # Today's path to an instance model: convert instance labels to the decoder's class maps and train
    # any zoo architecture on them; the saved model's class names tell predict_instances its decoder.
    decoder = DistanceDecoder()
    drawn = [nuclei_sample((64, 64), seed=40 + i, hard=True) for i in range(2)]
    targets = [decoder.targets(s.labels, s.spacing) for s in drawn]
    model = segarch.train("unet", [s.image for s in drawn], targets, options={"features": (4, 8, 16, 32)},
                          num_classes=decoder.channels, class_names=decoder.class_names, mask=True,
                          patch=(32, 32), steps=3, batch_size=2, device="cpu", out=tmp_path / "inst.safetensors")
    loaded = segarch.load_model(tmp_path / "inst.safetensors")
    assert loaded.class_names == decoder.class_names
    labels = predict_instances(loaded, drawn[0].image, device="cpu")
    assert labels.dtype == np.uint32 and labels.shape == (64, 64)
    assert type(segarch.instances.decoder_for(model)) is DistanceDecoder


def test_predict_takes_a_shipped_models_name_or_file_as_the_cli_does(tmp_path):
    from segarch.samples import nuclei

    image, _ = nuclei((128, 160), seed=int(np.random.default_rng().integers(1 << 16)))
    model = segarch.models.resolve("unet.nuclei2d_instances")
    by_model = segarch.predict(model, image, output="instances")
    assert by_model.max() >= 3
    np.testing.assert_array_equal(segarch.predict("unet.nuclei2d_instances", image, output="instances"), by_model)
    segarch.save_model(model, tmp_path / "m.safetensors")
    np.testing.assert_array_equal(segarch.predict(tmp_path / "m.safetensors", image, output="instances"), by_model)
    np.testing.assert_array_equal(segarch.predict("unet.nuclei2d_instances", image),
                                  segarch.predict(model, image))
    with pytest.raises(ValueError, match="names an architecture: a new, untrained network"):
        segarch.predict("unet", image)
