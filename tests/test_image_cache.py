"""The image cache: built once, trusted only when complete, resumable, locked, checked."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtlbench.datasets import image_cache
from mtlbench.datasets.base import no_progress
from mtlbench.datasets.decode import decode_files, resize_arrays
from mtlbench.datasets.image_cache import DECODED, UNREADABLE, cache_key, ensure_cache, open_complete, spot_check
from mtlbench.errors import UserError


@dataclass
class ArraySource:
    """A source of in-memory images; counts the jobs it hands out."""

    images: np.ndarray
    fingerprint: str = "f00d"
    dataset: str = "toy"
    use_processes: bool = False
    jobs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f"img{i:04d}" for i in range(len(self.images))]

    def job(self, start, stop, size):
        self.jobs.append((start, stop))
        return resize_arrays, (self.images[start:stop], size)


def toy(n: int = 40, size: int = 16, **kw) -> ArraySource:
    rng = np.random.default_rng(0)
    return ArraySource(rng.integers(0, 256, (n, size, size), dtype=np.uint8), **kw)


def test_build_then_reopen_without_decoding(tmp_path: Path) -> None:
    source = toy()
    cache = ensure_cache(source, 16, tmp_path, no_progress)
    assert np.array_equal(np.asarray(cache.pixels), source.images) and (cache.status == DECODED).all()
    assert isinstance(cache.pixels, np.memmap) and cache.names.tolist() == source.names
    source.jobs.clear()
    again = ensure_cache(source, 16, tmp_path, no_progress)
    assert source.jobs == [] and again.folder == cache.folder
    assert cache.folder.name == "toy-px16-f00d"


def test_resized_cache_is_area_averaged(tmp_path: Path) -> None:
    source = toy(size=32)
    cache = ensure_cache(source, 8, tmp_path, no_progress)
    expected = source.images.reshape(40, 8, 4, 8, 4).mean(axis=(2, 4))
    assert np.abs(np.asarray(cache.pixels, dtype=float) - expected).max() <= 1.0  # Pillow rounds in fixed point


def test_build_false_without_cache_says_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no complete toy cache at 16 px .* run `mtlbench data prepare`"):
        ensure_cache(toy(), 16, tmp_path, no_progress, build=False)


def test_a_building_or_damaged_cache_is_never_read_as_complete(tmp_path: Path) -> None:
    source = toy()
    cache = ensure_cache(source, 16, tmp_path, no_progress)
    key = cache_key(source, 16)
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    (cache.folder / "manifest.json").write_text(json.dumps({**manifest, "state": "building"}))
    assert open_complete(cache.folder, key) is None
    (cache.folder / "manifest.json").write_text(json.dumps(manifest))
    assert open_complete(cache.folder, key) is not None
    images = cache.folder / "images.npy"
    os.truncate(images, images.stat().st_size - 100)
    assert open_complete(cache.folder, key) is None
    rebuilt = ensure_cache(source, 16, tmp_path, no_progress)  # damaged → rebuilt from scratch
    assert np.array_equal(np.asarray(rebuilt.pixels), source.images)


def test_other_fingerprint_or_size_is_another_cache(tmp_path: Path) -> None:
    a = ensure_cache(toy(), 16, tmp_path, no_progress)
    b = ensure_cache(toy(fingerprint="beef"), 16, tmp_path, no_progress)
    c = ensure_cache(toy(), 8, tmp_path, no_progress)
    assert len({a.folder, b.folder, c.folder}) == 3


def test_unreadable_rows_are_recorded_with_their_reason(tmp_path: Path) -> None:
    Image.fromarray(np.full((20, 20), 77, dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    @dataclass
    class Files:
        paths: list[str]
        dataset: str = "files"
        fingerprint: str = "1"
        use_processes: bool = False

        @property
        def names(self):
            return [Path(p).name for p in self.paths]

        def job(self, start, stop, size):
            return decode_files, (self.paths[start:stop], size)

    cache = ensure_cache(Files([str(tmp_path / "ok.png"), str(tmp_path / "bad.png")]), 10, tmp_path / "c", no_progress)
    assert cache.status.tolist() == [DECODED, UNREADABLE]
    assert (np.asarray(cache.pixels[0]) == 77).all() and "bad.png" in cache.errors


def test_spot_check_finds_a_changed_image(tmp_path: Path) -> None:
    source = toy()
    cache = ensure_cache(source, 16, tmp_path, no_progress)
    assert spot_check(cache, source, 40) == []
    source.images[5] ^= 1
    assert spot_check(cache, source, 40) == ["img0005"]


def test_not_enough_disk_space_is_a_user_error_before_writing(tmp_path: Path, monkeypatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
    with pytest.raises(UserError, match=r"the image cache needs .* GiB free; free space or pass --cache-dir"):
        ensure_cache(toy(), 16, tmp_path, no_progress)
    assert not list(tmp_path.glob("*/images.npy"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_root_is_a_user_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot write the image cache .* pass --cache-dir"):
            ensure_cache(toy(), 16, tmp_path / "cache", no_progress)
    finally:
        tmp_path.chmod(0o700)


def test_write_failure_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(UserError, match="cannot write the image cache .* pass --cache-dir"):
        ensure_cache(toy(), 16, blocker, no_progress)


def test_two_builders_at_once_build_once(tmp_path: Path, monkeypatch) -> None:
    source = toy(n=600)
    builds = []
    real_build = image_cache._build

    def counting_build(*args, **kwargs):
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(image_cache, "_build", counting_build)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_cache(source, 16, tmp_path, no_progress)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 3
    assert all(np.array_equal(np.asarray(r.pixels), source.images) for r in results)


def test_worker_processes_decode_files(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(paths[-1])

    @dataclass
    class Files:
        dataset: str = "procs"
        fingerprint: str = "2"
        use_processes: bool = True

        @property
        def names(self):
            return [Path(p).name for p in paths]

        def job(self, start, stop, size):
            return decode_files, (paths[start:stop], size)

    monkeypatch.setattr(image_cache, "worker_count", lambda: 2)
    monkeypatch.setattr(image_cache, "PROCESS_CHUNK_ROWS", 2)
    cache = ensure_cache(Files(), 12, tmp_path / "c", no_progress)
    expected, _ = decode_files(paths, 12)
    assert np.array_equal(np.asarray(cache.pixels), expected)
