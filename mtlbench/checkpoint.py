"""Per-epoch checkpoints of a run, written atomically, so that a killed sweep resumes.

A checkpoint holds everything the next epoch depends on: the model, the optimizer, the LR
schedule, the method's own state (weights, histories, its generator), the global RNG states and
the trainer's loop state (epoch, step, timings, the model selected so far). The data order is a
function of (seed, epoch), so the epoch is the position in it. Files live next to the results
database, one per cell (`<db stem>.checkpoints/<config hash>.pt`), and are deleted when the run
ends with a result.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import torch

from mtlbench import atomic
from mtlbench.errors import UserError

FORMAT = 1


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, read-only folder)."""


def checkpoint_path(results: Path, config_hash: str) -> Path:
    """Where the checkpoint of the cell `config_hash` of the database `results` lives."""
    return results.parent / f"{results.stem}.checkpoints" / f"{config_hash}.pt"


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global RNG states a run draws from (CPU, and the device's on CUDA)."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Set the global RNG states saved by `rng_states`."""
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically: a temporary file, flushed to disk, then renamed.

    A crash at any moment leaves either the previous checkpoint or the new one, never a part.
    """

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_with(path, save)  # removes its temporary file on any failure, Ctrl-C included
    except OSError as exc:
        raise CheckpointWriteError(
            f"cannot write the checkpoint {path}: {exc.strerror or exc}; free space (or make the folder "
            "writable) and rerun the same command: the run resumes from its last checkpoint"
        ) from None


def load_checkpoint(
    path: Path, run_id: int, config_hash: str, device: torch.device
) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint of run `run_id` at `path`, or (None, why not) when there is none usable.

    Tensors that were on a CUDA device come back on `device`; CPU tensors (RNG states) stay.
    """
    if not path.exists():
        return None, "no checkpoint"
    try:
        payload = torch.load(path, map_location=placement(device), weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:  # damaged: not trusted
        return None, f"checkpoint {path.name} unreadable ({type(exc).__name__}); restarting the run"
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return None, f"checkpoint {path.name} has another format; restarting the run"
    if payload.get("run_id") != run_id or payload.get("config_hash") != config_hash:
        return None, f"checkpoint {path.name} belongs to another run; restarting the run"
    return payload, ""


def placement(device: torch.device) -> Callable[[Any, str], Any]:
    """torch.load's map_location: storages saved on a CUDA device go to `device`, CPU ones (RNG states) stay."""

    def place(storage: Any, location: str) -> Any:
        return storage if location == "cpu" else storage.to(device=device)

    return place


def remove_checkpoint(path: Path) -> None:
    """Delete a run's checkpoint and any temporary file a killed writer left (best effort)."""
    for leftover in [path, *path.parent.glob(f".{path.name}.*.tmp")]:
        try:
            leftover.unlink(missing_ok=True)
        except OSError:
            pass  # a checkpoint that cannot be deleted is never trusted by another run (run id and hash)
    try:
        path.parent.rmdir()  # only when empty: no stray folder next to the database after a sweep
    except OSError:
        pass
