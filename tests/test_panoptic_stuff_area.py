"""``stuff_area`` on the tiled panoptic path: stuff regions smaller than it become void (the class after the last),
equal to the whole-image decoding pixel for pixel, with regions crossing block seams; out of core too.

Fresh scenes of squares with an oracle network (exact heads): class 1 squares are things, class 2 squares are
stuff (``thing_classes=[1]``), of many sizes, some across the seams of 48-pixel blocks."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import ndimage

import segarch
from segarch.instances.deeperlab import DeeperLabDecoder
from segarch.instances.panoptic import PanopticDeepLabDecoder
from segarch.instances.stuff import void_small_stuff
from segarch.models.model import Model
from panoptic_helpers import OracleHeads, random_scene

VOID = 3  # the class after background, a, b
TILED = dict(axes="CYX", output="panoptic", tile=64, overlap=0.5, blend="crop", device="cpu")


def _setup(arch: str, seed: int):
    labels, classes = random_scene(np.random.default_rng(seed), shape=(160, 160), count=20, sides=(5, 20))
    oracle = OracleHeads(arch)
    model = Model(oracle, arch, spatial_dims=2, in_channels=2, out_channels=3, preprocessing=[],
                  class_names=["background", "a", "b"])
    return model, np.stack([labels, classes]).astype(np.float32), oracle.heads_for(labels, classes), classes


def _decoder(arch: str, stuff_area: int = 0):
    if arch == "deeperlab":
        return DeeperLabDecoder(thing_classes=(1,), radius=3, keypoints_are_logits=False, stuff_area=stuff_area)
    return PanopticDeepLabDecoder(thing_classes=(1,), top_k=None, stuff_area=stuff_area)


def _options(arch: str, **more):
    decoder = {"radius": 3, "keypoints_are_logits": False} if arch == "deeperlab" else {}
    return {"block": 48, "halo": 24, "thing_classes": [1], "decoder_options": decoder, **more}


def _seam_crossing(region: np.ndarray, block: int = 48) -> bool:
    box = ndimage.find_objects(region.astype(np.int8))[0]
    return any(s.start // block != (s.stop - 1) // block for s in box)


@pytest.mark.parametrize("arch", ["panoptic_deeplab", "deeperlab"])
def test_a_class_whose_stuff_is_smaller_is_void_as_in_the_whole_image_decoding(arch):
    seed = int(np.random.default_rng().integers(1 << 31))
    model, image, heads, classes = _setup(arch, seed)
    total = int(((classes == 2)).sum())  # class 2 is all stuff: its squares, several across block seams
    for stuff_area, voided in ((total, 0), (total + 1, total)):
        options = _options(arch, stuff_area=stuff_area, return_report=True)
        if voided:  # the decoders' own option name says the same
            del options["stuff_area"]
            options["decoder_options"] = {**options["decoder_options"], "stuff_area": stuff_area}
        result, report = segarch.predict(model, image, **TILED, instance_options=options)
        whole = _decoder(arch, stuff_area)(heads)
        assert np.array_equal(result.classes, np.where(whole.semantic == -1, VOID, whole.semantic)), seed
        assert report["voided_pixels"] == int((result.classes == VOID).sum()) == voided, seed
        assert int(result.instances.max()) == int(whole.instances.max()) > 0, seed


def _connected_reference(semantic: np.ndarray, instances: np.ndarray, stuff_area: int) -> np.ndarray:
    """The whole image at once: each face-connected region of one class among the stuff, voided if small."""
    out = semantic.copy()
    for value in np.unique(semantic[instances == 0]):
        regions, _ = ndimage.label((semantic == value) & (instances == 0))
        small = np.flatnonzero(np.bincount(regions.ravel())[1:] < stuff_area) + 1
        out[np.isin(regions, small)] = VOID
    return out


@pytest.mark.parametrize("arch", ["panoptic_deeplab", "deeperlab"])
def test_connected_stuff_regions_across_block_seams_equal_the_whole_image(arch, tmp_path):
    for attempt in range(20):  # a scene where a region kept across a seam has pieces smaller than the threshold
        seed = int(np.random.default_rng().integers(1 << 31))
        model, image, heads, classes = _setup(arch, seed)
        regions, count = ndimage.label(classes == 2)
        crossing = [int((regions == r).sum()) for r in range(1, count + 1) if _seam_crossing(regions == r)]
        sizes = np.bincount(regions.ravel())[1:]
        if crossing and (sizes < max(crossing)).any():
            break
    stuff_area = max(crossing)  # that region is kept (not fewer pixels), though no block holds all of it
    whole = _decoder(arch)(heads)
    reference = _connected_reference(whole.semantic, whole.instances, stuff_area)
    options = _options(arch, stuff_area=stuff_area, stuff_regions="connected", return_report=True)
    result, report = segarch.predict(model, image, **TILED, instance_options=options)
    assert np.array_equal(result.classes, reference), seed
    assert report["voided_regions"] >= 1 and report["voided_pixels"] == int((reference == VOID).sum()) > 0, seed
    # out of core: the same, the seam faces kept on disk meanwhile and removed
    stored, _ = segarch.predict(model, image, out=tmp_path / "scene.zarr", **TILED, instance_options=options)
    assert np.array_equal(stored.classes[:], reference), seed
    assert not (tmp_path / "scene.zarr" / ".stuff-scratch").exists()
    properties = zarr.open_group(str(tmp_path / "scene.zarr" / "classes"), mode="r").attrs["ome"]["image-label"]
    assert properties["properties"][-1] == {"label-value": VOID, "class": "void"}
    # per class (the decoders' count), the same scene: the class-2 squares together are one region, none is void
    _, by_class = segarch.predict(model, image, **TILED, instance_options={**options, "stuff_regions": "class"})
    assert by_class["voided_pixels"] == 0, seed


def test_block_wise_regions_equal_whole_image_labelling_on_random_3d_stuff():
    rng = np.random.default_rng()
    semantic = ndimage.zoom(rng.integers(0, 3, size=(6, 9, 9)), 4, order=0)[:22, :35, :33].astype(np.uint16)
    instances = (rng.random(semantic.shape) < 0.05).astype(np.uint32)  # object pixels punch holes in the stuff
    for stuff_area in (1, 50, 300):
        reference = _connected_reference(semantic.astype(np.int64), instances, stuff_area)
        classes = semantic.copy()
        report = void_small_stuff(classes, instances, stuff_area=stuff_area, void=VOID, loops=0, chunks=(7, 10, 8),
                                  regions="connected")
        assert np.array_equal(classes, reference)
        assert report["voided_pixels"] == int((reference == VOID).sum())


@pytest.mark.parametrize("value", [-1, 2.5, "100", True])
def test_a_bad_stuff_area_is_refused_before_anything_is_written(value, tmp_path):
    model, image, _, _ = _setup("panoptic_deeplab", 0)
    with pytest.raises(ValueError, match="`stuff_area` must be an integer >= 0"):
        segarch.predict(model, image, out=tmp_path / "scene.zarr", **TILED,
                        instance_options=_options("panoptic_deeplab", stuff_area=value))
    with pytest.raises(ValueError, match="`stuff_regions` must be one of"):
        segarch.predict(model, image, **TILED, instance_options=_options("panoptic_deeplab", stuff_area=5,
                                                                         stuff_regions="blobs"))
    assert not (tmp_path / "scene.zarr").exists() and not (tmp_path / "scene.zarr.heads").exists()


def test_a_run_cancelled_while_voiding_stuff_resumes_to_the_same_result(tmp_path):
    import threading

    from segarch.instances.blocks import DecodingCancelled

    seed = int(np.random.default_rng().integers(1 << 31))
    model, image, _, _ = _setup("panoptic_deeplab", seed)
    options = _options("panoptic_deeplab", stuff_area=60, stuff_regions="connected")
    reference = segarch.predict(model, image, **TILED, instance_options=options)
    cancel, totals = threading.Event(), []

    def progress(done, total):
        if not totals or total != totals[-1]:
            totals.append(total)
        if len(totals) == 4:  # network, objects, classes, then the stuff pass
            cancel.set()

    out = tmp_path / "scene.zarr"
    with pytest.raises(DecodingCancelled, match="stuff_area cancelled"):
        segarch.predict(model, image, out=out, progress=progress, cancel=cancel, **TILED, instance_options=options)
    assert not zarr.open_group(str(out), mode="r").attrs["segarch"]["complete"]
    resumed = segarch.predict(model, image, out=out, resume=True, **TILED, instance_options=options)
    assert np.array_equal(resumed.classes[:], reference.classes), seed
    assert np.array_equal(resumed.instances[:], reference.instances), seed
