"""napari-segarch: the napari plugin over the :mod:`segarch` engine.

The only package that imports napari, Qt or magicgui. Its contributions are declared in
``napari.yaml`` and imported by napari only when used, so this module imports nothing heavy.

napari, magicgui and npe2 come with the ``napari`` extra (``pip install "napari-segarch[napari]"``);
the engine installs without them. Importing the plugin without them fails here, at once, with that
command, instead of deep inside a widget with a bare ``No module named 'napari'``.
"""

from importlib.util import find_spec

__version__ = "0.1.0"
__all__ = ["__version__", "PLUGIN_REQUIREMENTS"]

#: What the plugin imports beyond the engine's own dependencies (all three come with the ``napari`` extra).
PLUGIN_REQUIREMENTS = ("napari", "magicgui", "npe2")


def _missing_requirements() -> list[str]:
    # find_spec only locates the packages (no import): napari itself takes a second or two to import.
    return [name for name in PLUGIN_REQUIREMENTS if find_spec(name) is None]


_missing = _missing_requirements()
if _missing:
    raise ModuleNotFoundError(
        f"The napari plugin of napari-segarch needs {', '.join(_missing)}, which this installation lacks: "
        'the engine-only install (`pip install napari-segarch`) leaves napari out. Install the plugin with '
        '`pip install "napari-segarch[napari]"` (napari, magicgui, npe2 and the PyQt6 binding). '
        "The engine (`import segarch`, the `segarch` command) works without them.",
        name=_missing[0],
    )
