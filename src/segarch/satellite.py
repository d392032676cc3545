"""Generated satellite scenes: one landscape, shown as an RGB photo or as multispectral bands in any season.

:func:`scene_layout` draws the landscape from a seed: Voronoi field parcels with crop rows and
hedges, meadow and woods, a meandering river and a lake, straight roads with bridges, buildings
with shadows along the roads, and the class of every pixel (:data:`SATELLITE_CLASSES`).

It is rendered two ways:

- :func:`satellite` (also ``segarch.samples.satellite``): the aerial RGB photo the demo, the napari
  sample and the shipped models use (the same pixels, seed for seed, as before this module existed).
- :func:`multispectral`: surface reflectance in 4 bands (red, green, blue, near-infrared) or the 13
  bands of Sentinel-2 (B01-B12 with B8A; the 20 m and 60 m bands blurred to their resolution), for a
  season: each parcel follows a crop calendar (winter cereal, summer crop, grass ley, fallow), so a
  field is green in one season and bare soil in another; meadow dries in summer, woods lose their
  leaves in winter; haze and a lower sun change with the season. The scene is georeferenced
  (EPSG:32633 at 10 m by default) and writes as a real GeoTIFF with :meth:`Scene.write`.

Reflectances are stored as Sentinel-2 L2A does: uint16, reflectance × 10000, 0 meaning no data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from segarch.io.geo import GeoReference, crs_wkt

__all__ = ["SATELLITE_CLASSES", "BAND_SETS", "SEASONS", "NODATA_LABEL", "SceneLayout", "Scene", "scene_layout",
           "satellite", "multispectral"]

#: Class names of the scene labels, indexed by label value.
SATELLITE_CLASSES = ("background", "field", "road", "building", "water")
#: The label of pixels with no data (outside the swath), with ``nodata_corner=True``.
NODATA_LABEL = 255
SEASONS = ("spring", "summer", "autumn", "winter")

# Sentinel-2 bands: name, central wavelength (nm), native resolution (m).
_S2 = (("B01", 443, 60), ("B02", 490, 10), ("B03", 560, 10), ("B04", 665, 10), ("B05", 705, 20), ("B06", 740, 20),
       ("B07", 783, 20), ("B08", 842, 10), ("B8A", 865, 20), ("B09", 945, 60), ("B10", 1375, 60), ("B11", 1610, 20),
       ("B12", 2190, 20))
#: Band sets :func:`multispectral` renders: names, and the Sentinel-2 band each one samples.
BAND_SETS = {
    "rgbn": (("red", "green", "blue", "nir"), ("B04", "B03", "B02", "B08")),
    "sentinel2": (tuple(b[0] for b in _S2), tuple(b[0] for b in _S2)),
}

# Surface reflectance (0-1) of each material in the 13 Sentinel-2 bands, B01 ... B12. Typical shapes:
# vegetation's red edge and NIR plateau, water dark beyond green, soils rising into the SWIR, B10 (cirrus,
# in a water-vapour absorption band) near zero at the surface.
_MATERIALS = {
    "green": (0.030, 0.035, 0.075, 0.035, 0.110, 0.300, 0.380, 0.420, 0.430, 0.420, 0.005, 0.220, 0.110),
    "dry": (0.060, 0.080, 0.120, 0.150, 0.190, 0.230, 0.260, 0.280, 0.290, 0.290, 0.008, 0.350, 0.260),
    "soil": (0.070, 0.090, 0.130, 0.170, 0.200, 0.220, 0.240, 0.260, 0.270, 0.270, 0.008, 0.330, 0.290),
    "wet_soil": (0.040, 0.050, 0.070, 0.090, 0.105, 0.115, 0.125, 0.135, 0.140, 0.140, 0.004, 0.170, 0.140),
    "canopy": (0.020, 0.025, 0.050, 0.025, 0.070, 0.200, 0.260, 0.290, 0.300, 0.290, 0.003, 0.150, 0.070),
    "bare_wood": (0.040, 0.050, 0.065, 0.075, 0.090, 0.120, 0.140, 0.150, 0.155, 0.150, 0.004, 0.200, 0.150),
    "water": (0.060, 0.065, 0.055, 0.030, 0.022, 0.015, 0.012, 0.010, 0.008, 0.006, 0.002, 0.004, 0.003),
    "asphalt": (0.080, 0.085, 0.095, 0.105, 0.110, 0.115, 0.120, 0.125, 0.128, 0.128, 0.004, 0.140, 0.130),
    "roof_red": (0.060, 0.065, 0.080, 0.220, 0.270, 0.290, 0.300, 0.310, 0.315, 0.310, 0.008, 0.360, 0.300),
    "roof_grey": (0.170, 0.190, 0.210, 0.220, 0.225, 0.230, 0.235, 0.240, 0.242, 0.240, 0.007, 0.260, 0.240),
    "roof_white": (0.400, 0.440, 0.460, 0.470, 0.470, 0.470, 0.470, 0.470, 0.470, 0.460, 0.010, 0.420, 0.380),
    "roof_dark": (0.050, 0.055, 0.060, 0.065, 0.068, 0.070, 0.072, 0.075, 0.076, 0.076, 0.003, 0.080, 0.075),
}
_ROOFS = ("roof_red", "roof_grey", "roof_white", "roof_dark")  # the RGB photo's four roof colours, in order
# Crop calendars: (green, dry) cover of a parcel per season; the rest is soil (wet after ploughing).
_CROPS = {
    "winter cereal": {"spring": (0.85, 0.05), "summer": (0.10, 0.75), "autumn": (0.10, 0.05), "winter": (0.30, 0.0)},
    "summer crop": {"spring": (0.05, 0.0), "summer": (0.90, 0.0), "autumn": (0.20, 0.60), "winter": (0.0, 0.10)},
    "grass ley": {"spring": (0.80, 0.05), "summer": (0.60, 0.30), "autumn": (0.60, 0.15), "winter": (0.40, 0.30)},
    "fallow": {"spring": (0.20, 0.30), "summer": (0.20, 0.40), "autumn": (0.15, 0.40), "winter": (0.10, 0.35)},
}
_WET_SOIL = {"spring": 0.3, "summer": 0.1, "autumn": 0.7, "winter": 0.8}
_MEADOW = {"spring": (0.80, 0.10), "summer": (0.55, 0.40), "autumn": (0.50, 0.35), "winter": (0.30, 0.40)}
_LEAVES = {"spring": 0.7, "summer": 1.0, "autumn": 0.5, "winter": 0.0}
_SUN = {"spring": 0.95, "summer": 1.0, "autumn": 0.85, "winter": 0.7}    # lower sun: darker scene
_HAZE = {"spring": 0.015, "summer": 0.02, "autumn": 0.025, "winter": 0.03}


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    # Blur in Fourier space: exact for a periodic image and needs nothing beyond NumPy.
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in image.shape], indexing="ij")
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * sum(f ** 2 for f in freqs))
    return np.real(np.fft.ifftn(np.fft.fftn(image) * kernel))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = _gaussian_blur(rng.normal(size=shape), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-12)


def _line_distance(yy: np.ndarray, xx: np.ndarray, point: Sequence[float], angle: float) -> np.ndarray:
    # Distance of every pixel to the infinite line through `point` at `angle`.
    return np.abs((yy - point[0]) * np.cos(angle) - (xx - point[1]) * np.sin(angle))


@dataclass
class Building:
    """One building: its window in the scene, roof and shadow masks there, and its roof kind (0-3)."""

    window: tuple[int, int, int, int]
    roof: np.ndarray
    shadow: np.ndarray
    kind: int


@dataclass
class SceneLayout:
    """The landscape of a scene, before any rendering: classes and the maps the renderers need."""

    shape: tuple[int, int]
    seed: int
    labels: np.ndarray
    texture: np.ndarray
    woods: np.ndarray
    parcel: np.ndarray
    field: np.ndarray
    colours: np.ndarray
    stripes: np.ndarray
    water: np.ndarray
    depth: np.ndarray
    road: np.ndarray
    buildings: list[Building] = field(default_factory=list)
    rng: np.random.Generator | None = None


def scene_layout(shape: tuple[int, int] = (512, 512), *, seed: int = 0) -> SceneLayout:
    """Draw a scene's landscape from ``seed`` (the same seed, the same landscape in every rendering)."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 64:
        raise ValueError(f"`shape` must be two sizes of at least 64 pixels, got {shape!r}.")
    # The draws below keep the order the RGB scene always had, so `satellite` renders the same pixels.
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    labels = np.zeros(shape, np.uint8)

    # Background: meadow with woods where a smooth noise field is high.
    texture = _smooth_noise(rng, shape, 6.0)
    woods = _smooth_noise(rng, shape, 18.0) > 0.9

    # Fields: Voronoi parcels; the thin band where two parcels meet stays a hedge (background).
    n_parcels = max(4, int(h * w / 4500))
    seeds = rng.uniform((0, 0), (h, w), size=(n_parcels, 2)).astype(np.float32)
    d1 = np.full(shape, np.inf, np.float32)
    d2 = np.full(shape, np.inf, np.float32)
    parcel = np.zeros(shape, np.intp)
    for i, (sy, sx) in enumerate(seeds):  # nearest and second-nearest seed, one seed at a time
        d = np.sqrt((yy - sy) ** 2 + (xx - sx) ** 2)
        closer = d < d1
        d2 = np.where(closer, d1, np.minimum(d2, d))
        d1 = np.where(closer, d, d1)
        parcel[closer] = i
    edge = (d2 - d1) < 2.5
    palette = np.array([(196, 178, 96), (120, 150, 62), (140, 104, 72), (170, 160, 80), (98, 140, 70)], np.float32)
    is_field = rng.uniform(size=n_parcels) < 0.65
    colours = palette[rng.integers(0, len(palette), n_parcels)]
    angles = rng.uniform(0, np.pi, n_parcels)
    periods = rng.uniform(4, 9, n_parcels)
    in_field = is_field[parcel] & ~edge & ~woods
    phase = (yy * np.cos(angles[parcel]) + xx * np.sin(angles[parcel])) * 2 * np.pi / periods[parcel]
    stripes = 0.88 + 0.12 * np.sin(phase)
    labels[in_field] = 1

    # Water: a meandering river across the long side, and a lake where another noise field peaks.
    transpose = w > h
    along, across = (xx, yy) if transpose else (yy, xx)
    length, breadth = (w, h) if transpose else (h, w)
    centre = breadth * rng.uniform(0.3, 0.7) + breadth * 0.15 * np.sin(
        2 * np.pi * along / (length * rng.uniform(0.5, 1.0)) + rng.uniform(0, 2 * np.pi))
    width = rng.uniform(6, 12) * (1 + 0.25 * np.sin(along / 23.0))
    water = np.abs(across - centre) < width
    water |= _smooth_noise(rng, shape, 14.0) > 2.2
    depth = np.clip(1 - np.abs(across - centre) / np.maximum(width, 1), 0, 1)
    labels[water] = 4

    # Roads: straight lines at random angles, over everything including the river.
    n_roads = int(rng.integers(2, 5))
    road_lines = []
    road = np.zeros(shape, bool)
    for _ in range(n_roads):
        point, angle, half = rng.uniform((0, 0), (h, w)), rng.uniform(0, np.pi), rng.uniform(1.5, 3.5)
        road_lines.append((point, angle, half))
        road |= _line_distance(yy, xx, point, angle) < half
    labels[road] = 2

    # Buildings: rotated rectangles set back from the roads, shadows to the south-east.
    n_buildings = max(6, int(h * w / 3000))
    building = np.zeros(shape, bool)
    buildings = []
    for _ in range(n_buildings):
        point, angle, half = road_lines[int(rng.integers(len(road_lines)))]
        t = rng.uniform(-max(h, w), max(h, w))
        offset = (half + rng.uniform(6, 16)) * rng.choice((-1, 1))
        cy = point[0] + t * np.sin(angle) + offset * np.cos(angle)
        cx = point[1] + t * np.cos(angle) - offset * np.sin(angle)
        if not (4 <= cy < h - 4 and 4 <= cx < w - 4):
            continue
        size = rng.uniform(3, 8, size=2)
        y0, y1 = int(max(cy - 12, 0)), int(min(cy + 13, h))
        x0, x1 = int(max(cx - 12, 0)), int(min(cx + 13, w))
        by, bx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = by * np.sin(angle) + bx * np.cos(angle)
        v = by * np.cos(angle) - bx * np.sin(angle)
        box = (np.abs(u) < size[0]) & (np.abs(v) < size[1])
        box &= ~road[y0:y1, x0:x1] & ~water[y0:y1, x0:x1] & ~building[y0:y1, x0:x1]
        if box.sum() < 12:
            continue
        shadow = np.zeros_like(box)
        shadow[2:, 2:] = box[:-2, :-2]
        shadow &= ~box & (labels[y0:y1, x0:x1] <= 1)
        buildings.append(Building((y0, y1, x0, x1), box, shadow, int(rng.integers(len(_ROOFS)))))
        building[y0:y1, x0:x1] |= box
    labels[building] = 3
    return SceneLayout(shape=shape, seed=int(seed), labels=labels, texture=texture, woods=woods, parcel=parcel,
                       field=in_field, colours=colours, stripes=stripes, water=water, depth=depth, road=road,
                       buildings=buildings, rng=rng)


def satellite(shape: tuple[int, int] = (512, 512), *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An aerial-photo-like RGB scene and its semantic labels.

    Fields are Voronoi parcels with crop-row stripes separated by hedges, a river meanders across,
    straight roads (with bridges) cross the scene, and buildings with shadows line the roads.

    Args:
        shape: ``(Y, X)`` size in pixels (each at least 64).
        seed: random seed; the same seed gives the same scene.

    Returns:
        ``(image, labels)``: a ``(Y, X, 3)`` uint8 RGB image and uint8 labels indexing
        :data:`SATELLITE_CLASSES` (0 background: meadow and woods, 1 field, 2 road, 3 building, 4 water).
    """
    lay = scene_layout(shape, seed=seed)
    rgb = np.empty(lay.shape + (3,), np.float32)
    texture = lay.texture
    rgb[:] = (88, 112, 60)
    rgb += texture[..., None] * (8, 10, 6)
    rgb[lay.woods] = rgb[lay.woods] * 0.55 + np.array((20, 40, 18), np.float32)
    f = lay.field
    rgb[f] = lay.colours[lay.parcel][f] * lay.stripes[f][:, None] + texture[f][:, None] * 4
    wt = lay.water
    rgb[wt] = np.array((38, 62, 92), np.float32) - 10 * lay.depth[wt][:, None] + texture[wt][:, None] * 3
    rgb[lay.road] = np.array((128, 126, 122), np.float32) + texture[lay.road][:, None] * 3
    roofs = np.array([(168, 72, 58), (150, 150, 152), (206, 204, 198), (110, 84, 70)], np.float32)
    for b in lay.buildings:
        y0, y1, x0, x1 = b.window
        rgb[y0:y1, x0:x1][b.shadow] *= 0.55
        rgb[y0:y1, x0:x1][b.roof] = roofs[b.kind] + texture[y0:y1, x0:x1][b.roof][:, None] * 2
    # The camera: a little blur and sensor noise.
    for c in range(3):
        rgb[..., c] = _gaussian_blur(rgb[..., c], 0.6)
    rgb += lay.rng.normal(0, 3.0, size=rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), lay.labels


# ---------------------------------------------------------------------------------------------- multispectral


@dataclass
class Scene:
    """A multispectral scene: reflectance bands, labels and where it lies on the map.

    Attributes:
        image: ``(bands, Y, X)`` uint16 surface reflectance × 10000 (0: no data).
        labels: ``(Y, X)`` uint8 classes (:data:`SATELLITE_CLASSES`; :data:`NODATA_LABEL` where no data).
        band_names: one name per band (``("red", "green", "blue", "nir")`` or ``B01`` ... ``B12``).
        wavelengths: central wavelength of each band in nm.
        season: the season it shows.
        geo: its georeference (CRS, transform, nodata 0, band names).
    """

    image: np.ndarray
    labels: np.ndarray
    band_names: tuple[str, ...]
    wavelengths: tuple[int, ...]
    season: str
    geo: GeoReference

    def write(self, image_path: str | Path, labels_path: str | Path | None = None, *, overwrite: bool = False,
              **kwargs) -> tuple[Path, Path | None]:
        """Write the bands (and the labels) as Cloud-Optimized GeoTIFFs with the scene's georeference.

        Needs the ``geo`` extra (rasterio). ``kwargs`` go to :func:`segarch.io.write_geotiff`.
        """
        from segarch.io.geotiff import write_geotiff

        image_out = write_geotiff(image_path, self.image, self.geo, labels=False, overwrite=overwrite,
                                  tags={"season": self.season}, **kwargs)
        labels_out = None
        if labels_path is not None:
            labels_geo = GeoReference(crs=self.geo.crs, crs_code=self.geo.crs_code, transform=self.geo.transform,
                                      shape=self.geo.shape, nodata=NODATA_LABEL, band_names=("class",),
                                      units=self.geo.units)
            labels_out = write_geotiff(labels_path, self.labels, labels_geo, labels=True, overwrite=overwrite,
                                       tags={"classes": ",".join(SATELLITE_CLASSES)}, **kwargs)
        return image_out, labels_out


def multispectral(shape: tuple[int, int] = (512, 512), *, bands: str | Sequence[str] = "rgbn", season: str = "summer",
                  seed: int = 0, pixel_size: float = 10.0, crs: str = "EPSG:32633",
                  origin: tuple[float, float] = (399960.0, 5300040.0), nodata_corner: bool = False) -> Scene:
    """A georeferenced multispectral scene of the landscape :func:`scene_layout` draws from ``seed``.

    Args:
        shape: ``(Y, X)`` in pixels (each at least 64).
        bands: ``"rgbn"`` (red, green, blue, near-infrared), ``"sentinel2"`` (13 bands B01-B12 with B8A),
            or a list of Sentinel-2 band names (``["B02", "B03", "B04", "B08"]``).
        season: ``"spring"``, ``"summer"``, ``"autumn"`` or ``"winter"``: the same landscape (same labels) in
            another season, with new sensor noise.
        seed: the landscape (and, with ``season``, the noise).
        pixel_size: metres per pixel (10 for Sentinel-2's finest bands).
        crs: the CRS as an ``"EPSG:..."`` code.
        origin: map ``(x, y)`` of the scene's top-left corner.
        nodata_corner: leave a no-data triangle in one corner, as at the edge of a satellite's swath
            (bands 0 there, labels :data:`NODATA_LABEL`).

    Returns:
        A :class:`Scene` (``scene.write("scene.tif", "labels.tif")`` writes both as GeoTIFFs).
    """
    if season not in SEASONS:
        raise ValueError(f"`season` must be one of {SEASONS}, got {season!r}.")
    if isinstance(bands, str):
        if bands not in BAND_SETS:
            raise ValueError(f"`bands` must be one of {tuple(BAND_SETS)} or a list of Sentinel-2 band names, got "
                             f"{bands!r}.")
        names, sampled = BAND_SETS[bands]
    else:
        names = sampled = tuple(bands)
        unknown = [b for b in names if b not in {s[0] for s in _S2}]
        if unknown or not names:
            raise ValueError(f"`bands` must name Sentinel-2 bands from {[s[0] for s in _S2]}, got {list(bands)!r}.")
    if not pixel_size > 0:
        raise ValueError(f"`pixel_size` must be positive (metres), got {pixel_size!r}.")
    lay = scene_layout(shape, seed=seed)
    h, w = lay.shape
    index = {s[0]: i for i, s in enumerate(_S2)}
    bidx = [index[b] for b in sampled]
    sig = {name: np.asarray(values, np.float32)[bidx] for name, values in _MATERIALS.items()}
    # The season's own draws: a crop per parcel (fixed by the seed), vigour and noise per season.
    crop_rng = np.random.default_rng([int(seed), 17])
    n_parcels = int(lay.parcel.max()) + 1
    crops = np.array(list(_CROPS))[crop_rng.choice(len(_CROPS), n_parcels, p=(0.35, 0.3, 0.2, 0.15))]
    rng = np.random.default_rng([int(seed), 17, SEASONS.index(season) + 1])
    vigour = np.clip(1 + 0.12 * rng.normal(size=n_parcels), 0.6, 1.3)
    soil = _WET_SOIL[season] * sig["wet_soil"] + (1 - _WET_SOIL[season]) * sig["soil"]

    out = np.empty((h, w, len(bidx)), np.float32)
    green, dry = _MEADOW[season]
    out[:] = green * sig["green"] + dry * sig["dry"] + (1 - green - dry) * soil
    leaves = _LEAVES[season]
    out[lay.woods] = leaves * sig["canopy"] + (1 - leaves) * sig["bare_wood"]
    # Fields: each parcel's crop cover for the season, in rows (the stripes) over its soil.
    cover = np.array([_CROPS[c][season] for c in crops], np.float32)      # (n_parcels, 2): green, dry
    f = lay.field
    rows = (lay.stripes[f].astype(np.float32) - 0.88) / 0.12              # -1..1 across the crop rows
    g = np.clip(cover[lay.parcel[f], 0] * vigour[lay.parcel[f]] * (1 + 0.25 * rows), 0, 1)
    d = np.clip(cover[lay.parcel[f], 1] * (1 + 0.15 * rows), 0, 1 - g)
    out[f] = g[:, None] * sig["green"] + d[:, None] * sig["dry"] + (1 - g - d)[:, None] * soil
    # Water: darker where deep; a shallow margin mixes in the river bed.
    shallow = (1 - lay.depth[lay.water]).astype(np.float32)[:, None] * 0.35
    out[lay.water] = (1 - shallow) * sig["water"] + shallow * sig["wet_soil"]
    out[lay.road] = sig["asphalt"]
    for b in lay.buildings:
        y0, y1, x0, x1 = b.window
        out[y0:y1, x0:x1][b.shadow] *= 0.45
        out[y0:y1, x0:x1][b.roof] = sig[_ROOFS[b.kind]]
    out *= (1 + 0.05 * lay.texture.astype(np.float32))[..., None]
    # The atmosphere and the sun: haze scattering more at short wavelengths, uneven illumination.
    wavelengths = np.array([_S2[i][1] for i in bidx], np.float32)
    haze_field = np.clip(1 + 0.5 * _smooth_noise(rng, lay.shape, max(lay.shape) / 6), 0.2, None).astype(np.float32)
    out = out * _SUN[season] * (0.93 + 0.14 * np.linspace(0, 1, w, dtype=np.float32))[None, :, None]
    out += _HAZE[season] * haze_field[..., None] * (490.0 / wavelengths) ** 2
    # The sensor: noise in each detector pixel, and each band at its own resolution (the 20 m and 60 m
    # bands, resampled onto the 10 m grid, are blurrier, their noise too).
    out += rng.normal(0, 0.006, size=out.shape).astype(np.float32)
    for c, i in enumerate(bidx):
        native = _S2[i][2]
        out[..., c] = _gaussian_blur(out[..., c], 0.6 * max(1.0, native / pixel_size) if native > 10 else 0.6)
    image = np.clip(np.rint(out * 10000), 1, 10000).astype(np.uint16).transpose(2, 0, 1).copy()
    labels = lay.labels.copy()
    if nodata_corner:
        yy, xx = np.ogrid[:h, :w]
        outside = yy / h + xx / w < 0.3
        image[:, outside] = 0
        labels[outside] = NODATA_LABEL
    x0, y0 = origin
    geo = GeoReference(crs=crs_wkt(crs), crs_code=crs, transform=(pixel_size, 0.0, x0, 0.0, -pixel_size, y0),
                       shape=(h, w), nodata=0, band_names=tuple(names), units="metre")
    return Scene(image=image, labels=labels, band_names=tuple(names),
                 wavelengths=tuple(int(_S2[i][1]) for i in bidx), season=season, geo=geo)
