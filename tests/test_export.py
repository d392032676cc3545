"""Export for other tools: ``segarch export MODEL --format onnx|bioimageio``; bioimage.io packages back in.

The packages are validated with the bioimage.io spec library (format) and run by bioimage.io's own test
(bioimageio.core: test input → pre-processing → each weights format → test output) when installed; both
work offline (packages hold every file, nothing is fetched).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
import yaml

import segarch
from segarch.cli import main
from segarch.models import Model, resolve
from segarch.runtimes import ExportError
from segarch.runtimes.export import export_model
from segarch.synthetic import nuclei

SMALL = {"features": (4, 8, 16, 32, 64)}
pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained():
    """A U-Net trained for a few steps on generated nuclei."""
    rng = np.random.default_rng()
    samples = [nuclei((96, 96), seed=int(rng.integers(2 ** 31))) for _ in range(2)]
    return segarch.train("unet", [s[0] for s in samples], [(s[1] > 0).astype(np.uint8) for s in samples],
                         options=SMALL, steps=30, batch_size=4, patch=64, val_fraction=0.5)


def test_onnx_export_cli_matches_eager(tmp_path, trained):
    import onnxruntime as ort

    path = tmp_path / "m.safetensors"
    segarch.save_model(trained, path)
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), "--format", "onnx", str(out), "--tile", "64"]) == 0
    x = np.random.default_rng().standard_normal((3, 1, 64, 64)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"tiles": x})[0]
    with torch.inference_mode():
        expected = trained.network.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
    assert main(["export", str(path), "--format", "onnx", str(out)]) == 2  # exists: refused, untouched
    assert out.stat().st_size > 0


def test_export_of_an_architecture_that_does_not_export_names_it(tmp_path, capsys):
    from segarch import zoo

    model = Model.from_zoo("spade", **zoo.card("spade").test_config)  # aten::vdot: no ONNX operator (opset 17)
    with pytest.raises(ExportError, match=r"'spade' does not export to ONNX \(\w+Error: .+\): it runs in segarch"):
        export_model(model, tmp_path / "s.onnx", tile=64)
    assert not (tmp_path / "s.onnx").exists()
    assert main(["export", "spade", str(tmp_path / "v.onnx"), "--tile", "64"]) == 2
    message = capsys.readouterr().err
    assert "segarch export: error: The architecture 'spade' does not export to ONNX" in message
    assert "cannot be exported" in message and "--runtime" in message
    assert not (tmp_path / "v.onnx").exists()


def test_bad_format_and_suffix_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"`format` must be one of \('onnx', 'bioimageio'\), got 'tflite'"):
        export_model("unet", tmp_path / "a.onnx", format="tflite")
    with pytest.raises(ValueError, match=r"`out` must end in '.onnx'"):
        export_model("unet", tmp_path / "a.zip", format="onnx")


@pytest.fixture(scope="module")
def package(tmp_path_factory, trained):
    out = tmp_path_factory.mktemp("bioimageio") / "nuclei.zip"
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGARCH_CACHE_DIR", str(cache))
        export_model(trained, out, format="bioimageio", tile=64, authors=["Test Author"], name="nuclei.v2 (test)")
    return out


@pytest.fixture
def offline(monkeypatch):
    """No connection can be opened: validation must work from the package's files alone."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert not attempts, f"validation tried the network: {attempts}"


def _validated(package):
    """The package loaded by the bioimage.io spec library with every file checked (read, hashed); the citation
    URLs (the only remote references) are declared known, which is the library's offline mode for them."""
    spec = pytest.importorskip("bioimageio.spec")
    with zipfile.ZipFile(package) as archive:
        urls = {c["url"]: None for c in yaml.safe_load(archive.read("bioimageio.yaml"))["cite"]}
    return spec.load_description(package, perform_io_checks=True, known_files=urls)


def test_bioimageio_package_is_valid_per_the_spec_library(package, offline):
    descr = _validated(package)
    summary = descr.validation_summary
    assert summary.status in ("valid-format", "passed"), summary.format()
    assert type(descr).__name__ == "ModelDescr" and not any(d.errors for d in summary.details)
    assert {str(k) for k, v in descr.weights.model_dump().items() if v} == {"onnx", "pytorch_state_dict"}
    steps = [s.id for s in descr.inputs[0].preprocessing]
    assert steps[:3] == ["ensure_dtype", "scale_range", "clip"]  # the default percentile normalisation, clipped
    assert [str(n) for n in descr.outputs[0].axes[1].channel_names] == ["background", "class_1"]
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("bioimageio.yaml"))
        test_in = np.load(io.BytesIO(archive.read("test_input.npy")))
    assert {"cover.png", "README.md", "weights.onnx", "weights.pt", "test_output.npy"} <= names
    assert test_in.shape == (1, 1, 64, 64)
    assert rdf["config"]["segarch"]["arch"] == "unet"


def test_bioimageio_core_reproduces_the_test_output_with_both_weights(package, offline):
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(_validated(package))  # test input → pre-processing → weights → test output
    checked = [d.name for d in summary.details if d.name.startswith("Reproduce test outputs")]
    assert summary.status == "passed", summary.format()
    assert len(checked) == 2 and any("onnx" in n for n in checked) and any("pytorch_state_dict" in n for n in checked)


@pytest.mark.parametrize("weights", ["onnx", "pytorch_state_dict"])
def test_round_trip_gives_the_same_labels(package, trained, weights, tmp_path):
    from segarch.models.bioimageio import OnnxNetwork, load_bioimageio

    model = load_bioimageio(package, weights=weights)
    assert isinstance(model.network, OnnxNetwork) == (weights == "onnx")
    assert model.preprocessing == trained.preprocessing and model.class_names == trained.class_names
    assert model.size_divisor == trained.size_divisor  # the engine tiles the same way
    image, _ = nuclei((150, 130), seed=int(np.random.default_rng().integers(2 ** 31)))
    expected = segarch.predict(trained, image, tile=64, runtime="torch", output="probabilities")
    got = segarch.predict(model, image, tile=64, runtime="auto", output="probabilities")
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-4)
    assert np.ptp(np.asarray(expected)) > 0.01  # scores vary (100× the tolerance): not a comparison of blanks
    expected, got = (np.asarray(segarch.predict(m, image, tile=64, runtime=r)) for m, r in ((trained, "torch"),
                                                                                             (model, "auto")))
    assert np.mean(got == expected) >= 0.9999, np.mean(got == expected)  # ties at 0.5 may flip, nothing else


def test_resolve_and_cli_take_a_package_folder(package, tmp_path, caplog):
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    model = resolve(str(folder))
    assert model.trained and model.arch == "unet" and type(model.network).__name__ == "OnnxNetwork"
    image = np.random.default_rng().random((64, 80)).astype(np.float32)
    np.save(tmp_path / "im.npy", image)
    assert main(["predict", str(tmp_path / "im.npy"), str(tmp_path / "out.zarr"), "--model", str(package),
                 "--tile", "64"]) == 0
    with caplog.at_level("WARNING", logger="segarch.runtimes"):  # no PyTorch network: ONNX Runtime runs it
        torch_asked = segarch.predict(model, image, tile=64, runtime="torch")
    assert "has ONNX weights only" in caplog.text
    np.testing.assert_array_equal(np.asarray(torch_asked), np.asarray(segarch.predict(model, image, tile=64)))


def _repack(package, path, edit):
    with zipfile.ZipFile(package) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    rdf = yaml.safe_load(files["bioimageio.yaml"])
    edit(rdf, files)
    files["bioimageio.yaml"] = yaml.safe_dump(rdf).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_unsupported_weights_are_refused_with_the_reason(package, tmp_path):
    def tensorflow_only(rdf, files):
        rdf["weights"] = {"tensorflow_saved_model_bundle": {"source": "tf.zip", "tensorflow_version": "2.15"},
                          "torchscript": {"source": "weights.pt", "pytorch_version": "2.1"}}

    bad = _repack(package, tmp_path / "tf.zip", tensorflow_only)
    with pytest.raises(ValueError, match=r"no weights segarch can load \(tensorflow_saved_model_bundle: TensorFlow "
                                         r"is not a segarch runtime; torchscript: TorchScript is a pickled program"):
        resolve(str(bad))


def test_pickled_state_dict_and_foreign_architecture_are_refused(package, tmp_path):
    from segarch.models.bioimageio import load_bioimageio

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    def pickled(rdf, files):
        buffer = io.BytesIO()
        torch.save({"weight": Payload()}, buffer)
        files["weights.pt"] = buffer.getvalue()

    with pytest.raises(ValueError, match="refused: it holds pickled Python objects"):
        load_bioimageio(_repack(package, tmp_path / "p.zip", pickled), weights="pytorch_state_dict")

    def foreign(rdf, files):
        del rdf["config"]
        rdf["weights"]["pytorch_state_dict"]["architecture"] = {"callable": "Net", "import_from": "evil.module"}

    with pytest.raises(ValueError, match=r"'Net' from 'evil.module'; segarch builds only its own architectures"):
        load_bioimageio(_repack(package, tmp_path / "f.zip", foreign), weights="pytorch_state_dict")


def test_foreign_onnx_package_reads_its_axes_and_preprocessing(package, tmp_path):
    """A package not written by segarch (no config.segarch): channels, classes and steps from the tensors."""
    from segarch.models.bioimageio import load_bioimageio

    def foreign(rdf, files):
        del rdf["config"], rdf["weights"]["pytorch_state_dict"]
        rdf["inputs"][0]["preprocessing"] = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}]

    model = load_bioimageio(_repack(package, tmp_path / "g.zip", foreign))
    assert (model.arch, model.in_channels, model.out_channels) == ("onnx", 1, 2)
    assert model.preprocessing == [{"_target_": "NormalizeIntensity", "channel_wise": True}]
    x = np.random.default_rng().standard_normal((1, 1, 48, 40)).astype(np.float32)  # smaller than the graph's tile
    assert model.network(torch.from_numpy(x)).shape == (1, 2, 48, 40)


def test_preprocessing_without_bioimageio_equivalent_is_named(tmp_path):
    model = Model.from_zoo("unet", **SMALL)
    model.preprocessing = [{"_target_": "GaussianSmooth", "sigma": [1.0]}]
    with pytest.raises(ValueError, match=r"`preprocessing\[0\]` \(GaussianSmooth\) has no bioimage.io"):
        export_model(model, tmp_path / "g.zip", format="bioimageio", tile=64)
    assert not (tmp_path / "g.zip").exists()


def test_cli_writes_a_bioimageio_folder_the_spec_library_accepts(trained, tmp_path, offline):
    path = tmp_path / "m.safetensors"
    segarch.save_model(trained, path)
    out = tmp_path / "package"
    assert main(["export", str(path), str(out), "--format", "bioimageio", "--tile", "64", "--author", "A. Person"]) == 0
    spec = pytest.importorskip("bioimageio.spec")
    rdf = yaml.safe_load((out / "bioimageio.yaml").read_text())
    descr = spec.load_description(out / "bioimageio.yaml", perform_io_checks=True,
                                  known_files={c["url"]: None for c in rdf["cite"]})
    assert descr.validation_summary.status in ("valid-format", "passed"), descr.validation_summary.format()
    assert [a.name for a in descr.authors] == ["A. Person"]
    test_in = np.load(out / "test_input.npy")
    with torch.inference_mode():
        expected = trained.network.eval()(torch.from_numpy(trained.preprocess(test_in[0]))[None]).numpy()
    np.testing.assert_allclose(np.load(out / "test_output.npy"), expected, rtol=1e-5, atol=1e-5)
