"""The one preprocessing function: geometry of each policy, channel order, and boxes mapped back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.model.manifest import Preprocess
from edgekit.model.preprocess import Preparer, plan, prepare


def gradient(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    img[..., 2] = 7
    return img


def test_center_crop_matches_torchvision_geometry() -> None:
    # torchvision: resize shorter side to 256, centre crop 224 == centre square of 224/256 of the shorter side.
    g = plan((480, 640), (224, 224), "center_crop", 0.875)
    assert g.crop == (110, 30, 420, 420)
    assert g.placed == (0, 0, 224, 224)


def test_letterbox_keeps_aspect_and_pads() -> None:
    out, g = prepare(gradient(100, 200), (64, 64), Preprocess(policy="letterbox"))
    assert g.placed == (0, 16, 64, 32)
    assert out[:16].max() == 0 and out[48:].max() == 0
    assert out[16:48].max() > 0


def test_bgr_frames_come_out_rgb() -> None:
    rgb = gradient(60, 80)
    out_rgb, _ = prepare(rgb, (30, 40), Preprocess())
    out_bgr, _ = prepare(np.ascontiguousarray(rgb[..., ::-1]), (30, 40), Preprocess(), color="BGR")
    np.testing.assert_array_equal(out_rgb, out_bgr)
    assert out_rgb[..., 2].min() == 7  # blue stayed blue


def test_writes_into_given_buffer() -> None:
    buf = np.zeros((32, 32, 3), np.uint8)
    out, _ = prepare(gradient(64, 64), (32, 32), Preprocess(), out=buf)
    assert out is buf and buf.any()


@pytest.mark.parametrize("policy", ["stretch", "center_crop", "letterbox"])
def test_boxes_map_back_to_source_pixels(policy: str) -> None:
    src_h, src_w = 300, 500
    g = plan((src_h, src_w), (100, 100), policy, 0.875)  # type: ignore[arg-type]
    # The box covering the placed region maps to the crop region of the source.
    px, py, pw, ph = g.placed
    box = np.array([[py / 100, px / 100, (py + ph) / 100, (px + pw) / 100]])
    cx, cy, cw, ch = g.crop
    np.testing.assert_allclose(g.to_source(box), [[cy, cx, cy + ch, cx + cw]], atol=1e-6)


def test_rejects_non_image() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        prepare(np.zeros((10, 10), np.uint8), (5, 5), Preprocess())


@pytest.mark.parametrize("policy", ["stretch", "center_crop", "letterbox"])
def test_a_preparer_follows_a_frame_size_that_changes(policy: str) -> None:
    # A frame loop keeps one Preparer, which keeps the plan of each frame size it has seen (at most 8): a camera
    # that changes resolution, or one more size than it keeps, must get what a fresh start gives.
    pre = Preprocess(policy=policy, crop_fraction=0.875 if policy == "center_crop" else 1.0, downscale="pyramid")  # type: ignore[arg-type]
    size = (64, 48)
    loop = Preparer(size, pre)
    rng = np.random.default_rng(5)
    sizes = [(64, 48), (100, 200), (100, 150), (480, 640), (73, 51), *[(90 + i, 120 + 3 * i) for i in range(9)]]
    for h, w in [*sizes, *sizes[::-1]]:
        for color in ("RGB", "BGR"):
            frame = rng.integers(0, 256, (h + 2, w, 3), np.uint8)[1:-1]  # a view, as a capture buffer can be
            out, want = np.empty((*size, 3), np.uint8), np.empty((*size, 3), np.uint8)
            geometry = loop(frame, color, out)  # type: ignore[arg-type]
            assert geometry == Preparer(size, pre)(frame, color, want)  # type: ignore[arg-type]
            assert geometry == plan((h, w), size, pre.policy, pre.crop_fraction, pre.downscale)
            np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match=r"uint8 image, got \(64, 48, 3\) float32"):
        loop(np.zeros((64, 48, 3), np.float32), "RGB", np.empty((*size, 3), np.uint8))


def test_pyramid_crops_are_trimmed_to_exact_halvings_and_stay_centred() -> None:
    # A 1080p frame: the 0.875 centre square is 945 px, over 4x the model's 224, so it is halved twice and
    # must be a multiple of 4 (944), still centred.
    g = plan((1080, 1920), (224, 224), "center_crop", 0.875, "pyramid")
    assert g.crop == (488, 68, 944, 944)
    # Under 2x there is nothing to trim: torchvision's geometry is kept exactly (see above); "area" never trims.
    assert plan((480, 640), (224, 224), "center_crop", 0.875, "pyramid").crop == (110, 30, 420, 420)
    assert plan((1080, 1920), (224, 224), "center_crop", 0.875, "area").crop == (487, 67, 945, 945)


def overlaps(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix: how much of source pixel j output pixel i covers, in 1/dst of a pixel (plain loops)."""
    m = np.zeros((dst, src))
    for i in range(dst):
        for j in range(src):
            m[i, j] = max(0, min((i + 1) * src, (j + 1) * dst) - max(i * src, j * dst))
    return m


def test_area_is_the_exact_mean_of_each_output_pixels_footprint(photos: list[Path]) -> None:
    # The independent computation: dense overlap matrices in float64, whose sums of integers are exact, rounded
    # half up. OpenCV's INTER_AREA (float accumulation) computes the same mean: within 1, in few pixels.
    import cv2

    shrunk = [image for image in map(cv2.imread, map(str, photos)) if min(image.shape[:2]) * 0.875 > 224]
    assert len(shrunk) > 10
    for image in shrunk[:6]:
        out, g = prepare(image, (224, 224), Preprocess(policy="center_crop", crop_fraction=0.875), color="BGR")
        cx, cy, cw, ch = g.crop
        crop = image[cy : cy + ch, cx : cx + cw].astype(np.float64)
        rows, cols = overlaps(ch, 224), overlaps(cw, 224)
        sums = np.dstack([rows @ crop[..., c] @ cols.T for c in range(3)]).astype(np.int64)
        total = ch * cw
        np.testing.assert_array_equal(out, ((2 * sums + total) // (2 * total))[..., ::-1])
        cv_area = cv2.resize(image[cy : cy + ch, cx : cx + cw], (224, 224), interpolation=cv2.INTER_AREA)
        off = np.abs(out[..., ::-1].astype(np.int16) - cv_area)
        assert off.max() <= 1 and (off > 0).mean() < 0.005


def test_area_enlarges_and_mixes_with_exact_bilinear() -> None:
    # A frame smaller than the model along one axis or both: shrink what shrinks (the box mean), then OpenCV's
    # fixed-point bilinear for what grows; a letterbox's non-contiguous inner region is written in place.
    import cv2

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (150, 400, 3), dtype=np.uint8)
    out, _ = prepare(frame, (224, 224), Preprocess(policy="stretch"))
    tall = np.empty((150, 224, 3), np.uint8)
    prepare(frame, (150, 224), Preprocess(policy="stretch"), out=tall)
    expected = cv2.resize(tall, (224, 224), interpolation=cv2.INTER_LINEAR_EXACT)
    np.testing.assert_array_equal(out, expected)
    small = frame[:100, :120]
    boxed, g = prepare(small, (224, 224), Preprocess(policy="letterbox"))
    px, py, pw, ph = g.placed
    inner = cv2.resize(small, (pw, ph), interpolation=cv2.INTER_LINEAR_EXACT)
    np.testing.assert_array_equal(boxed[py : py + ph, px : px + pw], inner)
    assert not boxed[:py].any() and not boxed[py + ph :].any()


def test_shrinking_averages_away_detail_finer_than_the_output_pixels() -> None:
    # A one-pixel checkerboard has no content at 224 px: a resize that samples instead of averaging turns it
    # into strong moire; the halving + bilinear path must give flat grey, as INTER_AREA does.
    checker = ((np.indices((700, 700)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out, g = prepare(np.dstack([checker] * 3), (224, 224), Preprocess(policy="stretch", downscale="pyramid"))
    assert g.crop == (0, 0, 700, 700)
    assert abs(float(out.mean()) - 127.5) < 1.0 and int(out.max()) - int(out.min()) <= 2


def test_shrinking_is_as_close_to_an_antialiased_resize_as_inter_area(photos: list[Path]) -> None:
    # Reference: Pillow's antialiased bilinear (what torchvision's Resize does). The fast path must be about as
    # close to it as one INTER_AREA call (it was slower, not better), and far closer than plain bilinear.
    import cv2
    from PIL import Image

    pre = Preprocess(policy="center_crop", crop_fraction=0.875, downscale="pyramid")
    ours, area, linear = [], [], []
    for path in photos:
        image = np.ascontiguousarray(cv2.imread(str(path))[..., ::-1])
        out, g = prepare(image, (224, 224), pre)
        cx, cy, cw, ch = g.crop
        crop = image[cy : cy + ch, cx : cx + cw]
        reference = np.asarray(Image.fromarray(crop).resize((224, 224), Image.Resampling.BILINEAR), np.int16)
        ours.append(np.abs(out - reference).mean())
        area.append(np.abs(cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA) - reference).mean())
        linear.append(np.abs(cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR) - reference).mean())
    assert np.mean(ours) <= np.mean(area) + 0.1, (np.mean(ours), np.mean(area))
    assert np.mean(ours) < 0.6 * np.mean(linear), (np.mean(ours), np.mean(linear))
