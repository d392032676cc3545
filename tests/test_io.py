"""segarch.io on real files: round trips, pyramids, foreign files, laziness; and the generated samples."""

from __future__ import annotations

import json
import time
import tracemalloc

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from segarch import io as sio
from segarch.io.pyramid import mode_reduce
from segarch.samples import SATELLITE_CLASSES, large_nuclei, large_nuclei_block, nuclei, satellite


@pytest.fixture(scope="module")
def stack():
    """A small 2-channel 3D image and instance labels of its nuclei."""
    image, labels = nuclei((6, 70, 83), count=12, seed=3)
    image = np.stack([image, image[::-1]]).astype(np.uint16)
    return image, labels


# ------------------------------------------------------------------------------------------------- OME-Zarr


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip_with_labels(tmp_path, stack, version):
    image, labels = stack
    path = sio.write_ome_zarr(tmp_path / "cells.ome.zarr", image, axes="CZYX", scale=(1, 2.0, 0.25, 0.3),
                              translate=(0, 4.0, 10.0, 20.0), units="micrometer", name="cells", levels=3,
                              version=version, chunks=(1, 4, 32, 32))
    props = [{"label-value": 0, "class": "background"}, {"label-value": 1, "class": "nucleus"}]
    sio.add_labels(path, "nuclei", labels, levels=3, properties=props)

    img, lab = sio.open_images(path)
    assert (img.name, img.axes, img.labels, lab.name, lab.labels) == ("cells", "CZYX", False, "nuclei", True)
    assert img.scale == (1.0, 2.0, 0.25, 0.3) and img.translate == (0.0, 4.0, 10.0, 20.0)
    assert img.units == {"Z": "micrometer", "Y": "micrometer", "X": "micrometer"}
    assert [lv.shape for lv in img.levels] == [(2, 6, 70, 83), (2, 6, 35, 41), (2, 6, 17, 20)]
    assert img.level_scales[2] == (1.0, 2.0, 1.0, 1.2)  # Y and X halved twice, C and Z kept
    assert img.levels[0].chunksize == (1, 4, 32, 32)
    np.testing.assert_array_equal(img.data.compute(), image)
    # Level 1 is the rounded 2×2 mean of level 0.
    expected = np.rint(image[:, :, :70, :82].reshape(2, 6, 35, 2, 41, 2).mean((3, 5))).astype(np.uint16)
    np.testing.assert_array_equal(img.levels[1].compute(), expected)

    assert lab.axes == "ZYX" and lab.scale == (2.0, 0.25, 0.3) and lab.translate == (4.0, 10.0, 20.0)
    np.testing.assert_array_equal(lab.data.compute(), labels)
    # The labels pyramid invents no labels: every coarse value exists in its 2×2 block.
    coarse = lab.levels[1].compute()
    assert set(np.unique(coarse)) <= set(np.unique(labels))
    assert lab.metadata["image-label"]["properties"] == props
    assert lab.metadata["image-label"]["source"] == {"image": "../../"}
    assert sio.list_labels(path) == ["nuclei"]


def test_ome_zarr_layout_on_disk_follows_the_spec(tmp_path):
    data = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48)
    v4 = sio.write_ome_zarr(tmp_path / "v4.zarr", data, axes="YX", scale=(0.5, 0.5), levels=2)
    v5 = sio.write_ome_zarr(tmp_path / "v5.zarr", data, axes="YX", scale=(0.5, 0.5), levels=2, version="0.5")
    attrs = json.loads((v4 / ".zattrs").read_text())
    assert (v4 / ".zgroup").is_file() and (v4 / "0" / ".zarray").is_file()
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == [[0.5, 0.5], [1.0, 1.0]]
    meta = json.loads((v5 / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["attributes"]["ome"]["version"] == "0.5"
    array_meta = json.loads((v5 / "0" / "zarr.json").read_text())
    assert array_meta["dimension_names"] == ["y", "x"]
    assert zarr.open_array(str(v5 / "1"), mode="r").shape == (32, 24)


def test_plain_zarr_arrays_v2_and_v3(tmp_path):
    data = np.random.default_rng(0).integers(0, 9, (3, 20, 30)).astype(np.int16)
    a2 = zarr.create_array(str(tmp_path / "plain2.zarr"), shape=data.shape, dtype=data.dtype, chunks=(1, 10, 10),
                           zarr_format=2)
    a2[:] = data
    a3 = zarr.create_array(str(tmp_path / "plain3.zarr"), shape=data.shape, dtype=data.dtype, chunks=(1, 10, 10),
                           dimension_names=["t", "y", "x"])
    a3[:] = data
    two, three = sio.open_image(tmp_path / "plain2.zarr"), sio.open_image(tmp_path / "plain3.zarr")
    assert (two.axes, three.axes) == ("ZYX", "TYX")  # guessed; named by dimension_names
    assert two.name == "plain2" and not two.multiscale
    np.testing.assert_array_equal(two.data.compute(), data)
    np.testing.assert_array_equal(three.data.compute(), data)


def test_bioformats2raw_layout_opens_its_first_series(tmp_path):
    data = np.arange(32 * 40, dtype=np.uint16).reshape(32, 40)
    root = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    sio.write_ome_zarr(tmp_path / "b2r.zarr" / "0", data, axes="YX", scale=(0.4, 0.4), name="series 0")
    image = sio.open_image(tmp_path / "b2r.zarr")
    assert image.name == "series 0" and image.scale == (0.4, 0.4)
    np.testing.assert_array_equal(image.data.compute(), data)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_add_pyramid_to_a_single_level_labels_image(tmp_path, stack, version):
    _, labels = stack
    path = sio.write_ome_zarr(tmp_path / "seg.zarr", labels, axes="ZYX", scale=(2, 0.5, 0.5), labels=True,
                              levels=1, chunks=(2, 32, 32), version=version)
    sio.add_pyramid(path, levels=3)
    seg = sio.open_image(path)
    assert seg.labels and [lv.shape for lv in seg.levels] == [(6, 70, 83), (6, 35, 41), (6, 17, 20)]
    assert seg.level_scales == [(2.0, 0.5, 0.5), (2.0, 1.0, 1.0), (2.0, 2.0, 2.0)]
    assert seg.levels[1].chunksize == (2, 32, 32)
    expected = sio.pyramid(labels, "ZYX", labels=True, levels=3)
    np.testing.assert_array_equal(seg.levels[2].compute(), expected[2].compute())
    with pytest.raises(ValueError, match="already has 3 levels"):
        sio.add_pyramid(path)


def test_rgb_and_odd_axis_orders_are_stored_in_ngff_order(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    image = sio.open_image(sio.write_ome_zarr(tmp_path / "rgb.zarr", rgb, axes="YXC", scale=(0.5, 0.7, 1)))
    assert image.axes == "CYX" and image.scale == (1.0, 0.5, 0.7)
    np.testing.assert_array_equal(image.data.compute(), rgb.transpose(2, 0, 1))


def test_writers_refuse_to_clobber(tmp_path):
    data = np.zeros((16, 16), np.uint8)
    path = sio.write_ome_zarr(tmp_path / "a.zarr", data)
    with pytest.raises(ValueError, match="already exists.*overwrite=True"):
        sio.write_ome_zarr(path, data)
    sio.write_ome_zarr(path, data + 1, overwrite=True)
    assert int(sio.open_image(path).data.max()) == 1
    (tmp_path / "folder.zarr").mkdir()
    (tmp_path / "folder.zarr" / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a Zarr store"):
        sio.write_ome_zarr(tmp_path / "folder.zarr", data, overwrite=True)
    assert (tmp_path / "folder.zarr" / "precious.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="`axes`"):
        sio.write_ome_zarr(tmp_path / "b.zarr", data, axes="YY")
    with pytest.raises(ValueError, match="`scale`"):
        sio.write_ome_zarr(tmp_path / "b.zarr", data, axes="YX", scale=(1, -1))


# ----------------------------------------------------------------------------------------------------- TIFF


def test_ome_tiff_round_trip_with_pyramid(tmp_path, stack):
    image, labels = stack
    path = sio.write_tiff(tmp_path / "cells.ome.tif", image, axes="CZYX", scale=(1, 2.0, 0.25, 0.3),
                          name="cells", levels=3, tile=32)
    img = sio.open_image(path)
    assert (img.name, img.axes, img.labels) == ("cells", "CZYX", False)
    assert img.scale == (1.0, 2.0, 0.25, 0.3) and img.units == {"Z": "micrometer", "Y": "micrometer", "X": "micrometer"}
    assert [lv.shape for lv in img.levels] == [(2, 6, 70, 83), (2, 6, 35, 41), (2, 6, 17, 20)]
    np.testing.assert_array_equal(img.data.compute(), image)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.series[0].is_pyramidal
        assert 'PhysicalSizeY="0.25"' in tif.ome_metadata

    lpath = sio.write_tiff(tmp_path / "nuclei.tif", labels.astype(np.int64), axes="ZYX", labels=True, levels=2)
    lab = sio.open_image(lpath)
    assert lab.labels and lab.name == "nuclei" and lab.dtype == np.uint32  # OME has no 64-bit integers
    np.testing.assert_array_equal(lab.data.compute(), labels)
    assert set(np.unique(lab.levels[1].compute())) <= set(np.unique(labels))


def test_rgb_bigtiff_and_imagej_tiffs(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    path = sio.write_tiff(tmp_path / "rgb.tif", rgb, levels=1, bigtiff=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    image = sio.open_image(path)
    assert image.axes == "YXC" and image.rgb
    np.testing.assert_array_equal(image.data.compute(), rgb)

    stack = np.arange(4 * 30 * 40, dtype=np.uint16).reshape(4, 30, 40)
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"})
    ij = sio.open_image(tmp_path / "ij.tif")
    assert ij.axes == "ZYX" and ij.scale == pytest.approx((1.5, 0.2, 0.2))
    assert ij.units["Z"] == "micrometer"
    np.testing.assert_array_equal(ij.data.compute(), stack)


def test_svs_like_whole_slide_tiff_opens_as_multiscale(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (512, 768, 3), dtype=np.uint8)
    path = tmp_path / "slide.svs"
    with tifffile.TiffWriter(path) as tw:  # Aperio layout: baseline, thumbnail, then reduced levels
        tw.write(rgb, tile=(256, 256), photometric="rgb", compression="zlib", metadata=None,
                 description="Aperio Image Library v12.0.0\n768x512 (256x256) RGB|AppMag = 20|MPP = 0.2500")
        tw.write(rgb[::8, ::8], photometric="rgb", metadata=None)
        tw.write(rgb[::2, ::2], tile=(256, 256), photometric="rgb", compression="zlib", metadata=None)
        tw.write(rgb[::4, ::4], tile=(256, 256), photometric="rgb", compression="zlib", metadata=None)
    slide = sio.open_image(path)
    assert slide.multiscale and [lv.shape for lv in slide.levels] == [(512, 768, 3), (256, 384, 3), (128, 192, 3)]
    assert slide.axes == "YXC" and slide.scale == (0.25, 0.25, 1.0) and slide.units["X"] == "micrometer"
    np.testing.assert_array_equal(slide.levels[2].compute(), rgb[::4, ::4])


def test_npy_is_memory_mapped(tmp_path):
    data = np.random.default_rng(0).random((5, 40, 50)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    image = sio.open_image(tmp_path / "x.npy")
    assert image.axes == "ZYX" and image.name == "x"
    np.testing.assert_array_equal(image.data.compute(), data)
    # The Dask array wraps a memory map, not a copy.
    assert any(isinstance(v, np.memmap) for v in image.data.dask.values())


# ---------------------------------------------------------------------------------------------- bad inputs


def test_files_that_are_not_what_their_extension_says(tmp_path):
    png = tmp_path / "photo.tif"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ValueError, match=r"photo\.tif' is not a TIFF file: expected a TIFF or BigTIFF header"):
        sio.open_image(png)

    good = sio.write_tiff(tmp_path / "good.tif", np.ones((64, 64), np.uint8), levels=1)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:12])
    with pytest.raises(ValueError, match=r"truncated\.tif' is not a readable TIFF image"):
        sio.open_image(truncated)

    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ValueError, match=r"empty\.zarr' is not a Zarr store: expected a folder with Zarr metadata"):
        sio.open_image(tmp_path / "empty.zarr")
    (tmp_path / "file.zarr").write_text("hello")
    with pytest.raises(ValueError, match=r"file\.zarr' is not a Zarr store"):
        sio.open_image(tmp_path / "file.zarr")
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.zarr' is not a readable Zarr store"):
        sio.open_image(broken)
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.attrs["multiscales"] = [{"datasets": [{"path": "missing"}]}]
    with pytest.raises(ValueError, match="level listed in 'multiscales' cannot be opened"):
        sio.open_image(tmp_path / "group.zarr")

    (tmp_path / "text.npy").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"text\.npy' is not a NumPy \.npy file"):
        sio.open_image(tmp_path / "text.npy")
    with pytest.raises(ValueError, match="unsupported extension.*.zarr, .tif"):
        sio.open_image(tmp_path / "image.png")
    with pytest.raises(ValueError, match="no such file"):
        sio.open_image(tmp_path / "missing.tif")
    np.save(tmp_path / "line.npy", np.arange(5))
    with pytest.raises(ValueError, match=r"line\.npy': Images must have 2 to 5 dimensions"):
        sio.open_image(tmp_path / "line.npy")


# -------------------------------------------------------------------------------------------------- laziness


def _open_measured(path):
    tracemalloc.start()
    image = sio.open_image(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return image, peak


@pytest.fixture(scope="module")
def big_files(tmp_path_factory):
    """A 32 MiB image (4096×4096 uint16) as OME-Zarr and as tiled BigTIFF."""
    root = tmp_path_factory.mktemp("big")
    yy, xx = np.mgrid[:4096, :4096]
    data = ((yy * 7 + xx * 3) % 65521).astype(np.uint16)
    zpath = sio.write_ome_zarr(root / "big.zarr", data, axes="YX", levels=1, chunks=512)
    tpath = sio.write_tiff(root / "big.tif", data, axes="YX", levels=1, tile=512, bigtiff=True)
    return data, zpath, tpath


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zarr", "tiff"])
def test_opening_a_big_image_reads_no_pixels(big_files, kind):
    data, zpath, tpath = big_files
    image, peak = _open_measured(zpath if kind == "zarr" else tpath)
    print(f"{kind}: open peak {peak / 2 ** 20:.2f} MiB")
    assert peak < data.nbytes // 16  # metadata only: far below the 32 MiB of pixels
    assert image.data.numblocks == (8, 8) and isinstance(image.data, da.Array)
    tracemalloc.start()
    tile = image.data[1024:1536, 2048:2560].compute()  # exactly one chunk
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(tile, data[1024:1536, 2048:2560])
    print(f"{kind}: one-chunk peak {peak / 2 ** 20:.2f} MiB")
    assert peak < data.nbytes // 8


# ---------------------------------------------------------------------------------------------------- pyramid


def test_mode_downsampling_keeps_the_majority_label():
    block = np.array([[1, 1, 2, 3], [1, 5, 2, 2], [7, 7, 4, 4], [0, 7, 4, 9]], np.uint16)
    out = da.coarsen(mode_reduce, da.from_array(block, chunks=2), {0: 2, 1: 2}).compute()
    np.testing.assert_array_equal(out, [[1, 2], [7, 4]])
    levels = sio.pyramid(np.arange(9 * 9).reshape(9, 9), "YX", labels=True, levels=3)
    assert [lv.shape for lv in levels] == [(9, 9), (4, 4), (2, 2)]


# ---------------------------------------------------------------------------------------------------- samples


def test_satellite_scene_is_reproducible_and_has_every_class():
    image, labels = satellite((256, 320), seed=5)
    again, _ = satellite((256, 320), seed=5)
    other, _ = satellite((256, 320), seed=6)
    assert image.shape == (256, 320, 3) and image.dtype == np.uint8 and labels.dtype == np.uint8
    np.testing.assert_array_equal(image, again)
    assert not np.array_equal(image, other)
    assert set(np.unique(labels)) == set(range(len(SATELLITE_CLASSES)))
    colour = {name: image[labels == i].mean(0) for i, name in enumerate(SATELLITE_CLASSES)}
    assert colour["water"][2] > colour["water"][0] + 20       # blue water
    assert np.ptp(colour["road"]) < 15                        # grey roads
    assert colour["field"].sum() > colour["water"].sum() + 150  # bright fields, dark water
    with pytest.raises(ValueError, match="`shape`"):
        satellite((32, 32))


def test_large_lazy_nuclei_is_generated_per_chunk():
    start = time.perf_counter()
    image_levels, label_levels = large_nuclei((20000, 20000), chunks=512, seed=1)
    assert time.perf_counter() - start < 2.0
    assert [lv.shape for lv in image_levels][:3] == [(20000, 20000), (10000, 10000), (5000, 5000)]
    assert image_levels[-1].shape[0] <= 1024 and image_levels[0].numblocks == (40, 40)
    # A window across four chunks equals the same window rendered directly: no seams between chunks.
    window = (slice(9984, 10040), slice(4090, 4140))
    direct_image, direct_labels = large_nuclei_block(9984, 4090, (56, 50), seed=1, image_shape=(20000, 20000))
    np.testing.assert_array_equal(image_levels[0][window].compute(), direct_image)
    np.testing.assert_array_equal(label_levels[0][window].compute(), direct_labels)
    # Same seed, same data; nuclei are bright and labelled.
    tile = image_levels[0][:512, :512].compute()
    tile_labels = label_levels[0][:512, :512].compute()
    np.testing.assert_array_equal(tile, large_nuclei((20000, 20000), seed=1)[0][0][:512, :512].compute())
    assert len(np.unique(tile_labels)) > 100
    assert tile[tile_labels > 0].mean() > 2 * tile[tile_labels == 0].mean()
    # A coarse level shows the same nuclei: its labels are labels of the full-resolution region.
    coarse = label_levels[2][:128, :128].compute()
    assert np.isin(np.unique(coarse), np.unique(tile_labels)).mean() > 0.95
