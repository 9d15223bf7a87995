"""The image cache: every source image decoded once, resized, and kept in one memory-mapped array.

    <cache_root>/<dataset>-px<size>-<fingerprint>/
        manifest.json   what the cache holds; "state" is "complete" only once all of it is on disk
        names.txt       the image name of each row
        images.npy      (M, size, size) uint8 in .npy format, read memory-mapped
        status.npy      (M,) int8 per row: 0 not yet decoded, 1 decoded, 2 unreadable
        errors.json     {name: why} for the unreadable rows
    <cache_root>/<dataset>-px<size>-<fingerprint>.lock   held by the process that builds it

The fingerprint covers the source list (names and file sizes), so a changed download gets its own
cache. A build writes a chunk's pixels, flushes them, and only then records the chunk's rows as
done: killed at any point, the next build resumes from the rows on record. Nothing but a manifest
in state "complete" with a matching key is ever read as a cache. A build that cannot resume
deletes only the files listed above (and their temporary copies): anything else in the folder stays.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from mtlbench import atomic
from mtlbench.datasets.base import ProgressFactory
from mtlbench.datasets.decode import DecodedChunk
from mtlbench.errors import UserError

FORMAT_VERSION = 1
PENDING, DECODED, UNREADABLE = 0, 1, 2
MANIFEST, NAMES, IMAGES, STATUS, ERRORS = "manifest.json", "names.txt", "images.npy", "status.npy", "errors.json"
THREAD_CHUNK_ROWS = 256  # images per job: small sources, decoded by threads
PROCESS_CHUNK_ROWS = 64  # images per job: large sources, decoded by worker processes
PERSIST_SECONDS = 2.0  # how much decoding a kill can lose at most (plus the chunks in flight)
# what a build writes into its folder: the files above and their temporary copies (mtlbench.atomic.temp_path)
_TEMP_FILE = re.compile(r"^\.(manifest\.json|names\.txt|status\.npy|errors\.json)\.tmp-\d+(\.npy)?$")
_CACHE_FOLDER = re.compile(r"^.+-px\d+-[^/]+$")


class ImageSource(Protocol):
    """Where a cache's images come from: one name per row, and picklable decoding jobs."""

    dataset: str
    names: Sequence[str]
    fingerprint: str  # of the source list: changes whenever the images would
    use_processes: bool  # decoding is heavy enough to be worth worker processes

    def job(self, start: int, stop: int, size: int) -> tuple[Callable[..., DecodedChunk], tuple[Any, ...]]:
        """(function, args) whose call decodes rows start..stop at `size` px."""
        ...


@dataclass(frozen=True)
class ImageCache:
    """A complete cache, opened read-only."""

    folder: Path
    pixels: np.ndarray  # (M, S, S) uint8, memory-mapped
    names: np.ndarray  # (M,) str
    status: np.ndarray  # (M,) int8
    errors: dict[str, str]
    manifest: dict[str, Any]

    def row_of(self) -> dict[str, int]:
        """{image name: its row}."""
        return {name: i for i, name in enumerate(self.names.tolist())}

    @property
    def fingerprint(self) -> str:
        """The source-list fingerprint the cache was built from."""
        return self.manifest["key"]["fingerprint"]


def cache_folder(cache_root: Path, dataset: str, size: int, fingerprint: str) -> Path:
    """The folder of the cache for (dataset, size, source fingerprint)."""
    return Path(cache_root) / f"{dataset}-px{size}-{fingerprint}"


def is_cache_file(name: str) -> bool:
    """Whether a file of this name in a cache folder is one a build writes (and may delete)."""
    return name in (MANIFEST, NAMES, IMAGES, STATUS, ERRORS) or _TEMP_FILE.match(name) is not None


def foreign_entries(cache_root: Path) -> list[str]:
    """Entries under `cache_root` that no cache build wrote (a user's files), as relative paths."""
    foreign = []
    for entry in sorted(cache_root.iterdir()):
        if entry.is_symlink():
            foreign.append(entry.name)
        elif entry.is_file() and entry.name.endswith(".lock"):
            continue
        elif entry.is_dir() and _CACHE_FOLDER.match(entry.name):
            foreign += [
                f"{entry.name}/{e.name}"
                for e in sorted(entry.iterdir())
                if e.is_symlink() or not e.is_file() or not is_cache_file(e.name)
            ]
        else:
            foreign.append(entry.name)
    return foreign


def cache_key(source: ImageSource, size: int) -> dict[str, Any]:
    """Everything a cache must match to be used for `source` at `size`."""
    return {
        "format": FORMAT_VERSION,
        "dataset": source.dataset,
        "image_size": size,
        "fingerprint": source.fingerprint,
        "count": len(source.names),
    }


def ensure_cache(
    source: ImageSource, size: int, cache_root: Path, progress: ProgressFactory, build: bool = True
) -> ImageCache:
    """The complete cache of `source` at `size` under `cache_root`, built (or resumed) if needed.

    With `build=False` a missing or incomplete cache is a UserError instead.
    """
    folder = cache_folder(cache_root, source.dataset, size, source.fingerprint)
    key = cache_key(source, size)
    cache = open_complete(folder, key)
    if cache is not None:
        return cache
    if not build:
        state = "an interrupted build" if (folder / MANIFEST).is_file() else "nothing"
        raise UserError(
            f"no complete {source.dataset} cache at {size} px for the current files: found {state} at {folder}; "
            f"run `mtlbench data prepare` with the same options"
        )
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _ExclusiveLock(folder.with_name(folder.name + ".lock"), progress):
            cache = open_complete(folder, key)  # another process may have finished it meanwhile
            if cache is None:
                _build(folder, source, size, key, progress)
                cache = open_complete(folder, key)
    except OSError as err:
        raise UserError(
            f"cannot write the image cache under {cache_root} ({err.strerror or err}); "
            "pass --cache-dir pointing to a writable folder with free space"
        ) from None
    if cache is None:  # pragma: no cover - _build either completes or raises
        raise UserError(f"the image cache at {folder} did not complete")
    return cache


def open_complete(folder: Path, key: dict[str, Any]) -> ImageCache | None:
    """The cache in `folder` if it is complete and matches `key`, else None."""
    manifest = _read_json(folder / MANIFEST)
    if not manifest or manifest.get("state") != "complete" or manifest.get("key") != key:
        return None
    try:
        pixels = np.load(folder / IMAGES, mmap_mode="r")
        status = np.load(folder / STATUS)
        names = np.array((folder / NAMES).read_text().splitlines())
        errors = _read_json(folder / ERRORS) or {}
    except (OSError, ValueError):
        return None
    size = key["image_size"]
    if pixels.shape != (key["count"], size, size) or len(status) != key["count"] or len(names) != key["count"]:
        return None
    if (status == PENDING).any():
        return None
    return ImageCache(folder, pixels, names, status, errors, manifest)


def spot_check(cache: ImageCache, source: ImageSource, count: int, seed: int = 0) -> list[str]:
    """Names of cached images (of `count` drawn at random) that differ from a fresh decode."""
    decoded = np.flatnonzero(cache.status == DECODED)
    rng = np.random.default_rng([seed, 0xC4C])
    rows = np.sort(rng.choice(decoded, size=min(count, len(decoded)), replace=False))
    size = cache.pixels.shape[1]
    bad = []
    for row in rows.tolist():
        fn, args = source.job(row, row + 1, size)
        image, errors = fn(*args)
        if errors or not np.array_equal(image[0], cache.pixels[row]):
            bad.append(str(cache.names[row]))
    return bad


def worker_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- building


class _ExclusiveLock:
    """flock on a file: one builder per cache folder, released even if the holder is killed."""

    def __init__(self, path: Path, progress: ProgressFactory) -> None:
        self.path, self.progress = path, progress

    def __enter__(self) -> None:
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.progress(f"waiting for another process building {self.path.stem}", 0)
            fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


@dataclass
class _Build:
    """An open build: the writable pixel array and the per-row status, persisted together."""

    folder: Path
    names: Sequence[str]
    pixels: np.ndarray
    status: np.ndarray
    errors: dict[str, str]

    def record(self, start: int, images: np.ndarray, errors: dict[int, str]) -> None:
        stop = start + len(images)
        self.pixels[start:stop] = images
        self.status[start:stop] = DECODED
        for offset, why in errors.items():
            self.status[start + offset] = UNREADABLE
            self.errors[str(self.names[start + offset])] = why

    def persist(self) -> None:
        """Pixels to disk first, then the status that vouches for them."""
        self.pixels.flush()
        atomic.write_with(self.folder / STATUS, lambda tmp: np.save(tmp, self.status), suffix=".npy")
        atomic.write_bytes(self.folder / ERRORS, json.dumps(self.errors, indent=0, sort_keys=True).encode())


def _build(folder: Path, source: ImageSource, size: int, key: dict[str, Any], progress: ProgressFactory) -> None:
    started = time.perf_counter()
    build = _resume(folder, key, source) or _start(folder, key, source, size)
    advance = progress(f"caching {source.dataset} images at {size} px", len(build.status))
    already = int((build.status != PENDING).sum())
    if already:
        advance(already)
    workers = worker_count()
    chunk = PROCESS_CHUNK_ROWS if source.use_processes else THREAD_CHUNK_ROWS
    todo = _pending_chunks(build.status, chunk)
    try:
        with _executor(source.use_processes, workers) as pool:
            _run_jobs(pool, 2 * workers, todo, source, size, build, advance)
    finally:
        build.persist()
    unreadable = int((build.status == UNREADABLE).sum())
    manifest = {
        "state": "complete",
        "key": key,
        "decoded": int((build.status == DECODED).sum()),
        "unreadable": unreadable,
        "build_seconds": round(time.perf_counter() - started, 2),
        "resumed_rows": already,
    }
    atomic.write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2).encode())


def _run_jobs(
    pool: Executor,
    in_flight: int,
    todo: Iterator[tuple[int, int]],
    source: ImageSource,
    size: int,
    build: _Build,
    advance: Callable[[int], None],
) -> None:
    running: dict[Future, int] = {}

    def submit() -> bool:
        span = next(todo, None)
        if span is None:
            return False
        fn, args = source.job(span[0], span[1], size)
        running[pool.submit(fn, *args)] = span[0]
        return True

    while len(running) < in_flight and submit():
        pass
    last = time.monotonic()
    try:
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            failed = [f for f in done if f.exception() is not None]
            for future in sorted(set(done) - set(failed), key=running.get):
                images, errors = future.result()
                build.record(running.pop(future), images, errors)
                advance(len(images))
                submit()
            if failed:  # after recording every chunk that did finish
                raise failed[0].exception()
            if time.monotonic() - last > PERSIST_SECONDS:
                build.persist()
                last = time.monotonic()
    finally:
        for future in running:
            future.cancel()


def _executor(use_processes: bool, workers: int) -> Executor:
    if use_processes and workers > 1:
        # fork, as torch's DataLoader workers do: the workers only run Pillow and numpy, and
        # spawn would re-import the caller's main module in every worker (and hang callers
        # whose scripts lack an `if __name__ == "__main__"` guard).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    return ThreadPoolExecutor(max(1, min(workers, 8)))


def _pending_chunks(status: np.ndarray, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, len(status), chunk):
        stop = min(start + chunk, len(status))
        if (status[start:stop] == PENDING).any():
            yield start, stop


def _resume(folder: Path, key: dict[str, Any], source: ImageSource) -> _Build | None:
    manifest = _read_json(folder / MANIFEST)
    if not manifest or manifest.get("state") != "building" or manifest.get("key") != key:
        return None
    try:
        names = (folder / NAMES).read_text().splitlines()
        pixels = np.load(folder / IMAGES, mmap_mode="r+")
        status = np.load(folder / STATUS)
        errors = _read_json(folder / ERRORS) or {}
    except (OSError, ValueError):
        return None
    size = key["image_size"]
    if names != list(source.names) or pixels.shape != (len(names), size, size) or status.shape != (len(names),):
        return None
    return _Build(folder, names, pixels, status.astype(np.int8), errors)


def _start(folder: Path, key: dict[str, Any], source: ImageSource, size: int) -> _Build:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():  # an unusable earlier build: only its files go, anything else stays
        if entry.is_file() and not entry.is_symlink() and is_cache_file(entry.name):
            entry.unlink()
    names = list(source.names)
    shape = (len(names), size, size)
    _check_free_space(folder, int(np.prod(shape)))
    (folder / NAMES).write_text("".join(f"{n}\n" for n in names))
    pixels = np.lib.format.open_memmap(folder / IMAGES, mode="w+", dtype=np.uint8, shape=shape)
    _reserve_space(folder / IMAGES)
    build = _Build(folder, names, pixels, np.zeros(len(names), dtype=np.int8), {})
    build.persist()
    # Written last: a "building" manifest means every file above exists.
    atomic.write_bytes(folder / MANIFEST, json.dumps({"state": "building", "key": key}, indent=2).encode())
    return build


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + (64 << 20):
        raise UserError(
            f"the image cache needs {needed / 2**30:.2f} GiB but {folder} has {free / 2**30:.2f} GiB free; "
            "free space or pass --cache-dir elsewhere"
        )


def _reserve_space(path: Path) -> None:
    # A memory-mapped write into a sparse file on a full disk kills the process with SIGBUS;
    # reserving the blocks up front turns that into an OSError here.
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as err:
                if err.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: file system cannot; carry on
                    raise


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
