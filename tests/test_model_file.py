"""Model files: round trips, safe loading, and clear errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import segarch
from segarch.models import read_metadata

SMALL = {"features": (4, 8, 16, 32, 64)}


def _model(arch="unet", dims=2, out_channels=3, **extra):
    torch.manual_seed(np.random.default_rng().integers(1 << 31))
    options = dict(segarch.zoo.card(arch).test_config) | extra
    model = segarch.Model.from_zoo(arch, spatial_dims=dims, in_channels=2, out_channels=out_channels,
                                   class_names=["background", "cell", "edge"][:out_channels], **options)
    model.network.eval()
    return model


@pytest.mark.parametrize("arch,dims", [("unet", 2), ("attention_unet", 3), ("unet_plus_plus", 2)])
def test_safetensors_round_trip_gives_identical_outputs(tmp_path, arch, dims):
    model = _model(arch, dims)
    model.axes = "C" + "ZYX"[-dims:]
    model.pixel_size = [0.5] * dims
    model.description = "round-trip test"
    path = segarch.save_model(model, tmp_path / "m.safetensors")
    loaded = segarch.load_model(path)
    assert loaded.metadata() == model.metadata()
    x = torch.randn(2, 2, *([16] * dims))
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.network.training
    assert read_metadata(path)["arch"] == arch


def test_preprocessing_is_saved_and_applied(tmp_path):
    model = _model()
    model.preprocessing = [{"_target_": "ScaleIntensityRange", "a_min": 0, "a_max": 200, "b_min": 0, "b_max": 1,
                            "clip": True}]
    loaded = segarch.load_model(segarch.save_model(model, tmp_path / "m.safetensors"))
    image = np.random.default_rng().uniform(0, 400, size=(2, 9, 7))
    out = loaded.preprocess(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, np.clip(image / 200, 0, 1), rtol=1e-5, atol=1e-6)


def test_default_preprocessing_normalises_each_channel_by_percentiles():
    rng = np.random.default_rng()
    image = np.stack([rng.normal(100, 10, (40, 40)), rng.normal(5000, 300, (40, 40))])
    out = _model().preprocess(image)
    assert out.min() == 0 and out.max() == 1
    for c in range(2):
        lo, hi = np.percentile(image[c], [1, 99])
        np.testing.assert_allclose(out[c], np.clip((image[c] - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_bad_preprocessing_config():
    with pytest.raises(ValueError, match="'_target_'"):
        segarch.Model.from_zoo("unet", **SMALL).__class__(torch.nn.Identity(), "unet", preprocessing=[{"lower": 1}])
    model = _model()
    model.preprocessing = [{"_target_": "NoSuchTransformAnywhere"}]
    model._preprocess = None
    with pytest.raises(ValueError, match="'NoSuchTransformAnywhere' is not an allowed transform"):
        model.preprocess(np.zeros((2, 4, 4)))


@pytest.mark.parametrize("wrap", ["plain", "checkpoint", "dataparallel"])
def test_plain_state_dict_loads_with_named_architecture(tmp_path, wrap):
    model = _model(out_channels=3)
    state = model.network.state_dict()
    if wrap == "checkpoint":
        state = {"epoch": 3, "state_dict": state}
    elif wrap == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / "w.pth")
    loaded = segarch.load_model(tmp_path / "w.pth", arch="unet", in_channels=2, **SMALL)
    assert loaded.out_channels == 3  # inferred from the head's weights
    x = torch.randn(1, 2, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_state_dict_without_arch_asks_for_it(tmp_path):
    torch.save(_model().network.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="pass `arch`"):
        segarch.load_model(tmp_path / "w.pt")


class _Payload:
    """Stands for any pickled object: loading must never construct it."""

    constructed = False

    def __setstate__(self, state):
        type(self).constructed = True


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(2), "payload": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused: it holds pickled Python objects"):
        segarch.load_model(tmp_path / "evil.pt", arch="unet")
    assert not _Payload.constructed


def test_truncated_and_corrupt_files(tmp_path):
    path = segarch.save_model(_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        segarch.load_model(tmp_path / "cut.safetensors")
    (tmp_path / "noise.safetensors").write_bytes(np.random.default_rng().bytes(4096))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        segarch.load_model(tmp_path / "noise.safetensors")
    (tmp_path / "noise.pt").write_bytes(b"PK\x03\x04" + np.random.default_rng().bytes(512))
    with pytest.raises(ValueError, match="not a readable PyTorch file"):
        segarch.load_model(tmp_path / "noise.pt", arch="unet")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file"):
        segarch.load_model(tmp_path / "absent.safetensors")
    (tmp_path / "m.onnx").write_bytes(b"0")
    with pytest.raises(ValueError, match="unknown suffix '.onnx'; allowed: .safetensors"):
        segarch.load_model(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="must end in '.safetensors'"):
        segarch.save_model(_model(), tmp_path / "m.pt")


def test_file_for_another_architecture(tmp_path):
    path = segarch.save_model(_model("unet"), tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="holds a 'unet' model, not 'attention_unet'"):
        segarch.load_model(path, arch="attention_unet")
    torch.save(_model("unet").network.state_dict(), tmp_path / "unet.pt")
    with pytest.raises(ValueError, match="does not match architecture 'attention_unet'.*missing from the file"):
        segarch.load_model(tmp_path / "unet.pt", arch="attention_unet", in_channels=2, **SMALL)


def test_mismatched_shapes_are_listed(tmp_path):
    torch.save(_model(out_channels=3).network.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"other shapes \(e.g. encoder.0.conv1.conv.weight: "
                                         r"file \(4, 2, 3, 3\) vs model \(4, 1, 3, 3\)"):
        segarch.load_model(tmp_path / "w.pt", arch="unet", in_channels=1, **SMALL)


def test_tampered_metadata_is_reported(tmp_path):
    from safetensors.torch import save_file

    model = _model()
    meta = model.metadata() | {"out_channels": 5, "class_names": list("abcde")}
    tensors = {k: v.contiguous() for k, v in model.network.state_dict().items()}
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "segarch", "segarch": json.dumps(meta)})
    with pytest.raises(ValueError, match="does not match architecture 'unet'.*other shapes"):
        segarch.load_model(tmp_path / "t.safetensors")
    save_file(tensors, str(tmp_path / "j.safetensors"), metadata={"format": "segarch", "segarch": "{not json"})
    with pytest.raises(ValueError, match="corrupt segarch metadata"):
        segarch.load_model(tmp_path / "j.safetensors")


def test_foreign_safetensors_loads_as_state_dict(tmp_path):
    from safetensors.torch import save_file

    model = _model(out_channels=2)
    save_file({k: v.contiguous() for k, v in model.network.state_dict().items()}, str(tmp_path / "f.safetensors"))
    assert read_metadata(tmp_path / "f.safetensors") is None
    with pytest.raises(ValueError, match="no segarch metadata"):
        segarch.load_model(tmp_path / "f.safetensors")
    loaded = segarch.load_model(tmp_path / "f.safetensors", arch="unet", in_channels=2, **SMALL)
    x = torch.randn(1, 2, 16, 16)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_model_validates_its_description():
    net = torch.nn.Identity()
    with pytest.raises(ValueError, match="`class_names` must have one name per output channel"):
        segarch.Model(net, "unet", out_channels=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="`axes` must hold C and the 2 spatial axes"):
        segarch.Model(net, "unet", axes="ZYX")
    with pytest.raises(ValueError, match="`pixel_size` must have 3 values"):
        segarch.Model(net, "unet", spatial_dims=3, pixel_size=[1.0])


def test_save_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    path = segarch.save_model(_model(), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        segarch.save_model(_model(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_half_precision_files_are_half_the_size_and_load_as_float32(tmp_path):
    model = segarch.Model.from_zoo("unet", spatial_dims=2, in_channels=1, out_channels=2, features=(8, 16, 32))
    full = segarch.save_model(model, tmp_path / "full.safetensors")
    half = segarch.save_model(model, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert oct(full.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # an ordinary file, not a private temp
    loaded = segarch.load_model(half)
    x = torch.from_numpy(np.random.default_rng().normal(size=(1, 1, 32, 32)).astype(np.float32))
    with torch.no_grad():
        a, b = model.network.eval()(x), loaded.network.eval()(x)
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    assert torch.allclose(a, b, atol=1e-2) and not torch.equal(a, b)  # float16 rounding, nothing more


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
