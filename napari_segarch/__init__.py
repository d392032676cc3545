"""napari-segarch: the napari plugin over the :mod:`segarch` engine.

The only package that imports napari, Qt or magicgui. Its contributions are declared in
``napari.yaml`` and imported by napari only when used, so this module imports nothing heavy.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
