"""Decoding source images: every Pillow mode to 8-bit grayscale, area resizing, unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtlbench.datasets.decode import UnreadableImage, decode_files, decode_grayscale, resize_arrays


def test_rgba_rgb_and_16_bit_read_as_8_bit_grayscale(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 4, 3), 90, dtype=np.uint8), mode="RGB").save(tmp_path / "rgb.png")
    wide = np.array([[0, 257 * 128, 65535, 257 * 40]] * 4, dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    for name, expected in [("rgba.png", 200), ("rgb.png", 90)]:
        image = decode_grayscale(tmp_path / name, 4)
        assert image.dtype == np.uint8 and image.shape == (4, 4) and (image == expected).all()
    assert decode_grayscale(tmp_path / "wide.png", 4)[0].tolist() == [0, 128, 255, 40]


def test_resize_averages_area(tmp_path: Path) -> None:
    checker = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(checker).save(tmp_path / "checker.png")
    small = decode_grayscale(tmp_path / "checker.png", 4)
    assert small.shape == (4, 4) and np.abs(small.astype(int) - 128).max() <= 1
    blocks = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) * 10, np.ones((4, 4), dtype=np.uint8))
    resized, errors = resize_arrays(blocks[None], 4)
    assert errors == {} and np.array_equal(resized[0], np.arange(16).reshape(4, 4) * 10)


def test_truncated_and_non_png_files_are_unreadable_with_a_reason(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.png", "text.png"):
        with pytest.raises(UnreadableImage):
            decode_grayscale(tmp_path / name, 8)
    images, errors = decode_files([str(tmp_path / n) for n in ("ok.png", "cut.png", "text.png", "gone.png")], 8)
    assert images.shape == (4, 8, 8) and sorted(errors) == [1, 2, 3]
    assert "truncated" in errors[1] or "Error" in errors[1]
    assert images[0].std() > 0 and not images[1:].any()
