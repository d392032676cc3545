"""The engine must never import napari or Qt, so it runs headless and on cluster workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # imports the engine in fresh interpreters

GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy")


def test_importing_every_engine_module_imports_no_gui():
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        import segarch
        names = ["segarch"] + [m.name for m in pkgutil.walk_packages(segarch.__path__, "segarch.")]
        for name in names:
            importlib.import_module(name)
        from segarch import zoo
        for name in zoo.names():
            zoo.create(name, **zoo.card(name).test_config)
        leaked = sorted({{m.split(".")[0] for m in sys.modules}} & set({GUI_MODULES!r}))
        print(len(names), leaked)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    count, leaked = result.stdout.strip().split(" ", 1)
    assert int(count) >= 10
    assert leaked == "[]", f"GUI modules imported by the engine: {leaked}"


def test_documented_top_level_api_resolves():
    import segarch

    for name in ("Model", "save_model", "load_model", "zoo", "predict", "train", "PredictionCancelled",
                 "pretrained", "io", "prompts"):
        assert getattr(segarch, name) is not None, name
    assert "unet.nuclei2d" in segarch.pretrained.names()
    assert callable(segarch.io.open_image) and callable(segarch.prompts.segment_from_points)
