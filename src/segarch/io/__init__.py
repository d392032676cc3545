"""Images in and out: lazy readers (Zarr, OME-Zarr, TIFF, .npy) and OME-Zarr / OME-TIFF writers.

No napari here: the tiling engine, the CLI and the napari plugin all use these functions.

Public API::

    segarch.io.open_image(path) -> Image        # levels (Dask), axes, scale, translate, name, units
    segarch.io.open_images(path) -> [Image]     # an OME-Zarr image and its labels images
    segarch.io.write_ome_zarr(path, data, axes=..., scale=..., labels=..., name=..., chunks=...)
    segarch.io.add_labels(image_path, name, labels)   # into an OME-Zarr image's labels/ group
    segarch.io.add_pyramid(path)                # down-sampled levels for a single-level OME-Zarr
    segarch.io.write_tiff(path, data, axes=..., scale=..., labels=..., name=..., levels=...)
    segarch.io.pyramid(data, axes, labels=...)  # lazy pyramid: mean for images, mode for labels

Satellite and aerial rasters (``pip install "napari-segarch[geo]"``, rasterio)::

    segarch.io.read_raster(path) -> Image       # GeoTIFF/COG/any GDAL raster, window by window; image.geo
    segarch.io.write_geotiff(path, data, geo)   # tiled COG with overviews, same CRS/transform/nodata
    segarch.io.geotiff_from_zarr(store, path)   # a Zarr store carrying `proj:`/`spatial:` attributes → COG
    segarch.io.add_georeference(store, geo)     # record a georeference in a Zarr store's attributes
    segarch.io.polygons(labels, geo=geo) -> Polygons      # block by block, merged across seams
    segarch.io.write_vectors("fields.gpkg", shapes)       # GeoPackage / GeoJSON with the CRS (pyogrio)
    segarch.io.write_qupath_geojson("cells.geojson", shapes)   # for slides: pixel (or µm) coordinates

Whole slides (``pip install "napari-segarch[slides]"``, tiffslide)::

    segarch.io.read_slide(path, pixel_size=None) -> Image   # SVS/NDPI/SCN/pyramidal TIFF, levels, µm/px
    segarch.io.pick_level(image, 0.5) -> LevelChoice        # the level nearest 0.5 µm/px and the zoom left
    segarch.io.tissue_mask(image) -> TissueMask             # Otsu on a low level; .tiles(512) to compute
"""

from __future__ import annotations

from segarch.io.geo import GeoReference, check_nodata, geo_attrs, geo_from_attrs
from segarch.io.geotiff import (NoCRSWarning, RasterWindows, add_georeference, geotiff_from_zarr,
                                is_georeferenced_tiff, read_georeference, read_raster, write_geotiff)
from segarch.io.levels import LevelChoice, pick_level, pixel_size_of
from segarch.io.slide import TissueMask, is_vendor_slide, read_slide, tissue_mask
from segarch.io.vectors import Polygons, polygons, write_qupath_geojson, write_vectors
from segarch.io.api import EXTENSIONS, format_of, open_image, open_images, read_npy
from segarch.io.image import AXES, Image, check_axes, guess_axes
from segarch.io.ome_zarr import add_labels, add_pyramid, is_zarr_store, list_labels, read_zarr, write_ome_zarr
from segarch.io.pyramid import downsample, pyramid
from segarch.io.tiff import is_tiff, read_tiff, write_tiff

__all__ = [
    "Image", "AXES", "EXTENSIONS", "open_image", "open_images", "format_of", "read_zarr", "read_tiff", "read_npy",
    "list_labels", "write_ome_zarr", "add_labels", "add_pyramid", "write_tiff", "pyramid", "downsample", "check_axes",
    "guess_axes",
    "is_zarr_store", "is_tiff",
    "GeoReference", "geo_attrs", "geo_from_attrs", "check_nodata", "read_raster", "write_geotiff", "geotiff_from_zarr",
    "add_georeference", "read_georeference", "is_georeferenced_tiff", "RasterWindows", "NoCRSWarning",
    "read_slide", "is_vendor_slide", "tissue_mask", "TissueMask", "pick_level", "LevelChoice", "pixel_size_of",
    "Polygons", "polygons", "write_vectors", "write_qupath_geojson",
]
