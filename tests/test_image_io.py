"""2D image reading: 16-bit big-endian and float TIFFs keep their values; multi-frame files warn."""

from __future__ import annotations

import numpy as np
from doubleunet_segment.data.image_io import read_image_2d
from PIL import Image


def _ramp() -> np.ndarray:
    return np.tile(np.arange(32, dtype=np.float64), (16, 1))  # rows 16, columns 32


def test_big_endian_16bit_tiff_keeps_its_values(tmp_path):
    values = (_ramp() * 1000).astype(">u2")
    path = tmp_path / "be16.tif"
    Image.frombytes("I;16B", (32, 16), values.tobytes()).save(path)
    with Image.open(path) as img:
        assert img.mode == "I;16B"
    volume = read_image_2d(path)
    assert volume.array.shape == (1, 32, 16, 1)
    np.testing.assert_array_equal(volume.array[0, :, :, 0].T, values.astype(np.float32))
    assert volume.warnings == []


def test_float_tiff_keeps_its_values(tmp_path):
    values = (_ramp() / 31).astype(np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values).save(path)
    volume = read_image_2d(path)
    assert volume.array.shape == (1, 32, 16, 1)
    np.testing.assert_allclose(volume.array[0, :, :, 0].T, values)


def test_multipage_tiff_and_animated_png_warn(tmp_path):
    frames = [Image.fromarray(np.full((16, 32), v, np.uint8)) for v in (10, 200, 90)]
    for name in ("pages.tif", "anim.png", "anim.gif"):
        path = tmp_path / name
        frames[0].save(path, save_all=True, append_images=frames[1:])
        volume = read_image_2d(path)
        assert any("3 frames/pages: only the first is segmented" in w for w in volume.warnings), name
        assert float(volume.array.max()) == 10.0, name  # the first frame, not a later one


def test_single_frame_png_has_no_warning(tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(path)
    assert read_image_2d(path).warnings == []
