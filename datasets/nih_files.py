"""The files of an NIH layout: the two split lists and the PNGs found by one scan of the tree.

Odd but harmless things are not errors; each becomes one warning line (see `scan_warnings`) that
the load stores with its runs and `run` and `mtlbench data` print:

- a link that loops (`a -> b -> a`) or leads nowhere is skipped and counted;
- a name listed twice in one split list is used once (the label is the CSV's one row either way,
  so the repeat carries nothing but a double weight in training and in the test AUROC);
- a file name found in two folders (`images_001/images/x.png` and `images_002/images/x.png`) is
  read from the first in sorted order; if the other copy holds different bytes the warning names
  both paths (identical copies are used silently).
"""

from __future__ import annotations

import filecmp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mtlbench.errors import UserError

IMAGES_DIR = "images"
IMAGE_SUFFIX = ".png"
_FOLDERS_SHOWN = 3


@dataclass(frozen=True)
class SplitList:
    """The names of a split list file, each once, and the lines of those listed more than once."""

    path: Path
    names: list[str]
    repeats: dict[str, list[int]] = field(default_factory=dict)  # name → every line it is on (1-based)

    def warning(self, dataset: str) -> str | None:
        """One line about the repeated names, or None."""
        if not self.repeats:
            return None
        name, lines = next(iter(self.repeats.items()))
        return (
            f"{dataset}: {self.path} lists {len(self.repeats):,} image(s) more than once, e.g. {name!r} on lines "
            f"{', '.join(map(str, lines))}; each is used once"
        )


def read_split_list(path: Path) -> SplitList:
    """Image names in a split list file, one a line, blank lines skipped, each name once (in first-seen order)."""
    if not path.is_file():
        raise UserError(f"split list {path} does not exist (it comes with the NIH ChestX-ray14 download)")
    lines_of: dict[str, list[int]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            lines_of.setdefault(line.strip(), []).append(number)
    return SplitList(path, list(lines_of), {n: lines for n, lines in lines_of.items() if len(lines) > 1})


def read_image_list(path: Path) -> list[str]:
    """Image names in a split list file, one a line, blank lines skipped, each name once."""
    return read_split_list(path).names


@dataclass(frozen=True)
class FoundImages:
    """PNG files found under a root: {name: (path, bytes)}, how many per folder, and what was odd."""

    root: Path
    files: dict[str, tuple[str, int]]
    per_folder: dict[str, int]
    broken_links: tuple[str, ...] = ()  # links that loop or lead nowhere, relative to root
    other_copies: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)  # name → later (path, bytes)

    def where(self) -> str:
        """Where images were looked for and found, for error messages."""
        if not self.files:
            return (
                f"found no {IMAGE_SUFFIX} files under {self.root} (expected {IMAGES_DIR}/*.png or "
                f"images_001/{IMAGES_DIR}/*.png …)"
            )
        listed = sorted(self.per_folder.items())
        folders = ", ".join(f"{f} ({n:,})" for f, n in listed[:_FOLDERS_SHOWN])
        if len(listed) > _FOLDERS_SHOWN:
            folders += f" and {len(listed) - _FOLDERS_SHOWN} more folder(s), the last {listed[-1][0]}"
        return f"found {len(self.files):,} {IMAGE_SUFFIX} file(s) under {self.root} in {folders}"

    def differing_copies(self, names: Iterable[str]) -> list[tuple[str, str]]:
        """(used path, other path) for each of `names` found again with different bytes."""
        out = []
        for name in names:
            used, size = self.files[name]
            for path, other_size in self.other_copies.get(name, ()):
                if not _same_bytes(used, size, path, other_size):
                    out.append((used, path))
        return out


def scan_images(root: Path, skip: Path | None = None) -> FoundImages:
    """Every PNG under `root` (following folder links once; skipping `skip` and hidden folders).

    A name found twice keeps its first path in sorted order; the others are kept in
    `other_copies`. A link that cannot be followed (a loop, or a target that is gone) is skipped
    and listed in `broken_links`.
    """
    root = Path(root)
    files: dict[str, tuple[str, int]] = {}
    others: dict[str, list[tuple[str, int]]] = {}
    per_folder: dict[str, int] = {}
    broken: list[str] = []
    skip_real = os.path.realpath(skip) if skip is not None else None
    visited: set[str] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in visited or real == skip_real:
            continue
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        count = 0
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
                is_png = not is_dir and entry.name.lower().endswith(IMAGE_SUFFIX)
                size = entry.stat().st_size if is_png else 0
            except OSError:  # ELOOP (a -> b -> a) or a link whose target is gone
                if entry.is_symlink():
                    broken.append(os.path.relpath(entry.path, root))
                continue
            if is_dir:
                subfolders.append(entry.path)
            elif is_png and entry.name in files:
                others.setdefault(entry.name, []).append((entry.path, size))
            elif is_png:
                files[entry.name] = (entry.path, size)
                count += 1
        if count:
            per_folder[os.path.relpath(folder, root)] = count
        stack.extend(reversed(subfolders))
    return FoundImages(root, files, per_folder, tuple(broken), {k: tuple(v) for k, v in others.items()})


def scan_warnings(dataset: str, found: FoundImages, used: Iterable[str]) -> list[str]:
    """One line each about skipped links and about `used` names whose copies differ; [] when there are none."""
    lines = []
    if found.broken_links:
        lines.append(
            f"{dataset}: skipped {len(found.broken_links):,} link(s) under {found.root} that loop or lead nowhere, "
            f"e.g. {found.broken_links[0]}"
        )
    differing = found.differing_copies(used)
    if differing:
        first, second = differing[0]
        more = f" (and {len(differing) - 1:,} more such name(s))" if len(differing) > 1 else ""
        lines.append(
            f"{dataset}: {Path(first).name} is in two folders with different bytes{more}: {first} is used, "
            f"{second} is not; delete the wrong copy"
        )
    return lines


def _same_bytes(a: str, a_size: int, b: str, b_size: int) -> bool:
    if a_size != b_size:
        return False
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:  # the other copy cannot be read: it is not known to be the same
        return False
