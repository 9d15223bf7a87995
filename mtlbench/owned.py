"""What mtlbench may delete or replace: only what it wrote itself.

An output folder (`report --out`, `export --out`) is written into a scratch folder next to it,
`.<name>.partial-<pid>`, and swapped into place whole, so a failure or a kill never leaves a
half-written or mixed folder. Each folder written this way holds a marker file
(`.mtlbench-report`, `.mtlbench-export`) that lists every entry written. An existing `--out`
is replaced only if it is an empty folder, or if it holds that marker and nothing the marker
does not list; never if it is a file, a symbolic link, the current folder (or holds it), or
holds a path the command reads (the results database). Anything else is refused with a
UserError that says what to do.

Scratch folders of a process that died (`<name>.partial-<pid>` whose pid is not alive on this
host) are removed by the next command that writes next to them (`remove_stale_partials`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from mtlbench import __version__
from mtlbench.results.leases import pid_exists
from mtlbench.errors import UserError

T = TypeVar("T")
KINDS = ("report", "export")  # the commands that write a whole folder


def marker_name(kind: str) -> str:
    """The marker file a `mtlbench <kind>` folder holds: `.mtlbench-report`, `.mtlbench-export`."""
    return f".mtlbench-{kind}"


def remove_stale_partials(parent: Path, pattern: str, owned: Callable[[Path], bool]) -> list[Path]:
    """Delete the folders in `parent` matching `pattern` (a glob ending `-*`, the suffix being a
    pid) whose process is not alive on this host, or is this process (a leftover of an earlier
    process with the same pid), and that `owned` recognises as mtlbench's (by a marker written
    when the folder was created). Entries whose suffix is not a pid, symbolic links, files and
    folders without the marker are never touched. Returns the folders deleted.
    """
    if not parent.is_dir():
        return []
    removed = []
    for partial in parent.glob(pattern):
        owner = partial.name.rsplit("-", 1)[-1]
        if not owner.isdigit() or partial.is_symlink() or not partial.is_dir():
            continue
        if int(owner) != os.getpid() and pid_exists(int(owner)):
            continue
        if not owned(partial):
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    return removed


def write_whole_folder(out: Path, kind: str, reads: Sequence[Path], write: Callable[[Path], T]) -> T:
    """Call `write(scratch)` to fill a scratch folder, then swap it in as `out`, whole.

    `out` must be new, an empty folder, or a folder an earlier `mtlbench <kind>` wrote (see the
    module docstring); `reads` are the paths the command reads, which `out` must not hold. An
    OSError while writing or swapping becomes a UserError; the scratch folder never survives, and
    an earlier `out` is left as it was unless the swap succeeded.
    """
    target = check_output_folder(out, kind, reads)
    _remove_stale_outputs(target.parent)
    scratch = target.with_name(f".{target.name}.partial-{os.getpid()}")
    created = False
    try:
        scratch.mkdir(parents=True)  # fails if something of that name is there: it is not deleted
        created = True
        _write_marker(scratch, kind, [])  # from the start: a killed process's scratch is known as ours
        result = write(scratch)
        _write_marker(scratch, kind, _entries(scratch, kind))
        check_output_folder(out, kind, reads)  # again: the folder may have changed while writing
        _swap(scratch, target, out, kind)
    except OSError as exc:
        raise UserError(
            f"cannot write the {kind} to {out}: {exc.strerror or exc}; "
            "pass --out a folder in a writable place with free space"
        ) from None
    finally:
        if created and scratch.is_dir() and not scratch.is_symlink():
            shutil.rmtree(scratch, ignore_errors=True)
    return result


def check_output_folder(out: Path, kind: str, reads: Sequence[Path]) -> Path:
    """The absolute path `out` resolves to, if `mtlbench <kind>` may write it; else a UserError."""
    pick = f"pick a new or empty folder for the {kind}"
    if out.is_symlink():
        raise UserError(f"--out {out} is a symbolic link; pass the folder it points to, or {pick}")
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise UserError(f"--out {out} is the current folder or holds it; {pick} (e.g. a new folder below it)")
    for path in reads:
        read = Path(path).resolve()
        if read == target or target in read.parents:
            relation = "is" if read == target else "holds"
            raise UserError(f"--out {out} {relation} {path}, which this command reads; {pick} outside it")
    if not target.exists():
        return target
    if not target.is_dir():
        raise UserError(f"--out {out} is an existing file, not a folder; {pick}")
    if not any(target.iterdir()):
        return target
    listed = _listed_entries(target, kind)
    if listed is None:
        raise UserError(
            f"--out {out} is not empty and was not written by `mtlbench {kind}` (it has no "
            f"{marker_name(kind)}), and mtlbench replaces only a folder it wrote; {pick}, "
            "or move its files elsewhere"
        )
    foreign = sorted(set(_entries(target, kind)) - listed)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise UserError(
            f"--out {out} holds {len(foreign)} file(s) that `mtlbench {kind}` did not write "
            f"({shown}); move them out of it, or {pick}"
        )
    return target


def _swap(scratch: Path, target: Path, out: Path, kind: str) -> None:
    if not target.exists():
        os.rename(scratch, target)  # fails rather than replace anything created meanwhile but an empty folder
        return
    if not any(target.iterdir()):
        os.replace(scratch, target)  # replaces an empty folder only; ENOTEMPTY if a file appeared
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    try:
        listed = _listed_entries(old, kind)
        if listed is None or set(_entries(old, kind)) - listed:  # a file appeared since the check
            raise UserError(f"--out {out} changed while the {kind} was written; rerun the same command")
        os.rename(scratch, target)
    except BaseException:
        if not os.path.lexists(target):
            os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_outputs(parent: Path) -> None:
    """Scratch and replaced folders of report/export processes that died, in `parent`."""

    def owned(folder: Path) -> bool:
        return any((folder / marker_name(kind)).is_file() for kind in KINDS)

    for pattern in (".*.partial-*", ".*.old-*"):
        remove_stale_partials(parent, pattern, owned)


def _entries(folder: Path, kind: str) -> list[str]:
    """Every entry under `folder` (folders, files, links), as relative POSIX paths, but the marker."""
    found = []
    for base, dirs, files in os.walk(folder):
        rel = Path(base).relative_to(folder)
        found += [(rel / name).as_posix() for name in [*dirs, *files]]
    return sorted(e for e in found if e != marker_name(kind))


def _listed_entries(folder: Path, kind: str) -> set[str] | None:
    """The entries the marker of `folder` lists, or None if it has no readable marker of `kind`."""
    try:
        data = json.loads((folder / marker_name(kind)).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != f"mtlbench {kind}":
        return None
    entries = data.get("entries")
    return {str(e) for e in entries} if isinstance(entries, list) else None


def _write_marker(folder: Path, kind: str, entries: Iterable[str]) -> None:
    text = json.dumps(
        {
            "written_by": f"mtlbench {kind}",
            "version": __version__,
            "note": f"this folder is replaced whole by the next `mtlbench {kind}` into it",
            "entries": list(entries),
        },
        indent=1,
    )
    (folder / marker_name(kind)).write_text(text + "\n")
