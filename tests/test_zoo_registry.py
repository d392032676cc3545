"""The registry's contract: names, cards, create, and its errors."""

from __future__ import annotations

import pytest

from segarch import zoo


def test_names_and_tasks():
    names = zoo.names()
    assert {"unet", "attention_unet", "unet_plus_plus"} <= set(names)
    assert names == sorted(names)
    assert set(zoo.names(task="semantic")) >= {"unet", "attention_unet", "unet_plus_plus"}
    assert zoo.names(task="interactive") == [n for n in names if zoo.card(n).task == "interactive"]
    with pytest.raises(ValueError, match="`task` must be one of"):
        zoo.names(task="segmentation")


@pytest.mark.parametrize("name", zoo.names())
def test_card_fields(name):
    entry = zoo.card(name)
    assert entry.name == name
    assert entry.full_name and entry.paper and entry.paper_params_source
    assert entry.reference.startswith(("arXiv:", "doi:"))
    assert 1990 < entry.year < 2030
    assert entry.task in zoo.TASKS
    assert set(entry.spatial_dims) <= {2, 3} and entry.spatial_dims
    assert entry.size_divisor >= 1
    assert entry.paper_config["spatial_dims"] in entry.spatial_dims
    summary = entry.summary()
    assert summary["name"] == name and "builder" not in summary


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError) as err:
        zoo.create("unet_pp")
    message = str(err.value)
    assert "'unet_pp'" in message and "Did you mean" in message and "'unet_plus_plus'" in message
    assert "Available:" in message
    with pytest.raises(ValueError, match="Unknown architecture"):
        zoo.card("zzzz")


def test_name_spelling_is_forgiving():
    assert zoo.card("UNet-Plus-Plus".lower()).name == "unet_plus_plus"
    assert zoo.card("attention-unet").name == "attention_unet"


def test_unsupported_spatial_dims():
    with pytest.raises(ValueError, match=r"`spatial_dims` must be one of \(2, 3\) for 'unet', got 1"):
        zoo.create("unet", spatial_dims=1)


def test_bad_options_and_channels():
    with pytest.raises(ValueError, match="Unknown option.*feature.*allowed options: features, norm, dropout, up_mode"):
        zoo.create("unet", feature=(4, 8))
    with pytest.raises(ValueError, match="`in_channels` must be a positive integer, got 0"):
        zoo.create("unet", in_channels=0)
    with pytest.raises(ValueError, match="`features` must be"):
        zoo.create("unet", features=(4, -8))
    with pytest.raises(ValueError, match="`features` must be 5 positive integers"):
        zoo.create("attention_unet", features=(4, 8, 16))
    with pytest.raises(ValueError, match="`norm` must be one of"):
        zoo.create("unet", norm="layer")
    with pytest.raises(ValueError, match="`up_mode` must be one of"):
        zoo.create("unet", up_mode="pixelshuffle")
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\)"):
        zoo.create("unet", dropout=1.5)
    with pytest.raises(ValueError, match="`prune_depth` must be None or an integer in"):
        zoo.create("unet_plus_plus", prune_depth=9)


def test_parameter_count_on_meta_device_matches_a_real_build():
    import torch

    config = {"spatial_dims": 3, "in_channels": 2, "out_channels": 4, "features": (4, 8, 16)}
    net = zoo.create("unet", **config)
    assert zoo.parameter_count("unet", **config) == sum(p.numel() for p in net.parameters())
    assert all(p.device == torch.device("cpu") for p in net.parameters())


def test_the_class_itself_is_registered_and_functions_only_for_variants():
    from segarch.nets.hrnet import HRNetSeg
    from segarch.nets.unet import UNet

    assert zoo.card("unet").builder is UNet  # options are read from UNet.__init__
    net = zoo.create("unet", spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8), norm="batch")
    assert type(net) is UNet and net.size_divisor == 2
    variant = zoo.card("hrnet_v2_w18_small").builder  # fixes width, stages and head of HRNetSeg
    assert not isinstance(variant, type) and variant.__name__ == "hrnet_v2_w18_small"
    assert isinstance(zoo.create("hrnet_v2_w18_small", **zoo.card("hrnet_v2_w18_small").test_config), HRNetSeg)
    with pytest.raises(TypeError, match="takes spatial_dims, in_channels, out_channels first"):
        zoo.register(name="bad")(lambda in_channels, spatial_dims, out_channels: None)
    assert "bad" not in zoo.names()
