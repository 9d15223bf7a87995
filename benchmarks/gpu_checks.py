"""End-to-end CUDA checks of the real CLI: a sweep, a deterministic repeat, a kill and a resume.

Three checks, each through `python -m mtlbench.cli run` in a subprocess, as a user runs it:

1. sweep: `--methods all --preset smoke --device <device>`; every run's status, wall time,
   training images/s and peak memory from the results database;
2. determinism: one gradient method with `--deterministic --precision fp32`, run twice into two
   databases: are the stored metrics, weights and predictions identical, bit for bit?
3. kill and resume: the same command, SIGKILLed right after its first checkpoint lands (the
   CUDA RNG states and the model are in it), then rerun: does it resume, and does it store the
   same numbers as the uninterrupted run?

    python benchmarks/gpu_checks.py --device cuda --out docs/gpu_checks_h100.md
    python benchmarks/gpu_checks.py --device cpu --synth-images 120 --out /tmp/checks.md   # plumbing only
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import emit

from mtlbench.results.readers import computed_results
from mtlbench.results.readers import rows_read_only as rows


def cli(*args: str) -> list[str]:
    """The command line of `mtlbench` with `args`."""
    return [sys.executable, "-m", "mtlbench.cli", *args]


def run(cmd: list[str], log: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `cmd`, keep its last output lines in `log`, return the finished process."""
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    tail = (done.stdout + done.stderr).strip().splitlines()[-6:]
    log.append(f"$ {' '.join(cmd[2:])}  # exit {done.returncode}, {time.monotonic() - t0:.1f} s")
    log += [f"    {line}" for line in tail]
    print("\n".join(log[-len(tail) - 1 :]), flush=True)
    return done


def sweep(args, work: Path, log: list[str]) -> list[str]:
    """Check 1: every method, smoke preset, on the device; a table of the stored runs."""
    results = work / "sweep.sqlite"
    t0 = time.monotonic()
    flags = f"--methods all --preset smoke --device {args.device} --synth-images {args.synth_images}".split()
    done = run(cli("run", *flags, "--results", str(results), "--data-dir", str(work / "data")), log)
    wall = time.monotonic() - t0
    lines = [
        f"### 1. `mtlbench run --methods all --preset smoke --device {args.device}`",
        "",
        f"Exit status {done.returncode}, {wall:.1f} s for the whole command (data generation included).",
        "",
    ]
    if not results.exists():
        return lines + ["No results database was written.", ""]
    lines += [
        "| method | status | grad engine | wall s | training images/s | median step ms | peak CUDA MiB | error |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    query = (
        "SELECT r.method, r.status, json_extract(r.config_json, '$.grad_engine'), c.wall_s, c.images_per_s, "
        "1000 * c.median_step_s, c.peak_cuda_mb, coalesce(r.error, '') "
        "FROM runs r LEFT JOIN costs c USING (run_id) ORDER BY r.run_id"
    )
    for method, status, engine, wall_s, ips, step_ms, peak, error in rows(results, query):

        def fmt(v, spec):
            return "" if v is None else format(v, spec)

        lines.append(
            f"| {method} | {status} | {engine} | {fmt(wall_s, '.1f')} | {fmt(ips, '.0f')} | "
            f"{fmt(step_ms, '.1f')} | {fmt(peak, '.0f')} | {error.splitlines()[0][:80] if error else ''} |"
        )
    return lines + [""]


def gradient_command(args, results: Path, work: Path) -> list[str]:
    """The deterministic fp32 run of one gradient method that checks 2 and 3 share."""
    flags = f"--methods {args.method} --preset smoke --device {args.device} --deterministic --precision fp32"
    flags += f" --epochs 3 --synth-images {args.synth_images}"
    return cli("run", *flags.split(), "--results", str(results), "--data-dir", str(work / "data"))


def same_numbers(a: Path, b: Path) -> str:
    """'identical' or which stored tables differ between two results databases."""
    first, second = computed_results(a), computed_results(b)
    differ = [name for name in first if first[name] != second[name]]
    return f"identical ({', '.join(first)})" if not differ else "DIFFER in " + ", ".join(differ)


def determinism(args, work: Path, log: list[str]) -> tuple[list[str], Path | None]:
    """Check 2: the same deterministic run twice; the stored numbers compared exactly."""
    first, second = work / "det1.sqlite", work / "det2.sqlite"
    codes = [run(gradient_command(args, db, work), log).returncode for db in (first, second)]
    verdict = same_numbers(first, second) if codes == [0, 0] else f"not comparable: exit statuses {codes}"
    return [
        f"### 2. `--methods {args.method} --deterministic --precision fp32 --epochs 3`, twice",
        "",
        f"Stored numbers of the two runs: **{verdict}**.",
        "",
    ], (first if codes[0] == 0 else None)


def kill_and_resume(args, work: Path, log: list[str], reference: Path | None) -> list[str]:
    """Check 3: SIGKILL right after the first checkpoint, rerun, compare with the reference run."""
    results = work / "killed.sqlite"
    checkpoints = results.parent / f"{results.stem}.checkpoints"
    cmd = gradient_command(args, results, work)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.monotonic() + 600, False
    while time.monotonic() < deadline and proc.poll() is None:
        if any(checkpoints.glob("*.pt")):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    proc.communicate(timeout=120)
    lines = ["### 3. The same run SIGKILLed after its first checkpoint, then rerun", ""]
    if not killed:
        return lines + [f"Not checked: the run ended (exit {proc.returncode}) before a checkpoint appeared.", ""]
    again = run(cmd, log)
    resumed = "resumed at epoch" in again.stdout
    status = rows(results, "SELECT status, resumes FROM runs ORDER BY run_id DESC LIMIT 1")
    verdict = same_numbers(results, reference) if reference and again.returncode == 0 else "not comparable"
    return lines + [
        f"Killed: yes. Rerun exit status {again.returncode}; resumed from the checkpoint: "
        f"**{'yes' if resumed else 'NO'}**; run row {status}; checkpoints left behind: "
        f"{'yes' if checkpoints.exists() and any(checkpoints.iterdir()) else 'none'}.",
        f"Stored numbers against the uninterrupted run of check 2: **{verdict}**.",
        "",
    ]


def main() -> None:
    """Parse arguments, run the three checks, print (and optionally write) a markdown report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--method", default="pcgrad", help="the gradient method of checks 2 and 3")
    ap.add_argument("--synth-images", type=int, default=400)
    ap.add_argument("--workdir", help="where data and databases go (default: a temporary folder)")
    ap.add_argument("--out", help="also write the markdown report here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="gpu-checks-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        log: list[str] = []
        lines = [f"End-to-end checks of `mtlbench run` on `--device {args.device}` (benchmarks/gpu_checks.py).", ""]
        lines += sweep(args, work, log)
        det, reference = determinism(args, work, log)
        lines += det
        lines += kill_and_resume(args, work, log, reference)
        lines += ["Commands and the end of their output:", "", "```", *log, "```"]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
