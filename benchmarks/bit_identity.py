"""Digest of everything a CPU sweep stores, per method: proof that a refactor changed no number.

Runs one small CPU sweep of the given methods in a fresh database (cxr14-synth, fixed seed) and
prints, per method, a SHA-256 over its stored metrics, weight rows, predictions and diagnostics
(costs and timings excluded: they are measurements, not results). Save the output before a
change and compare after it:

    python benchmarks/bit_identity.py --out before.json
    python benchmarks/bit_identity.py --compare before.json --rename famo=famo-nextbatch

`--rename OLD=NEW` compares the baseline's OLD with today's NEW (a method renamed by the change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mtlbench.results.readers import computed_results


def sweep_digests(methods: str, workdir: Path, results: Path | None = None) -> dict[str, str]:
    """Run the sweep in `workdir` (database `results`) and return {method: digest of its stored results}."""
    results = results or workdir / "bit.sqlite"
    flags = "--preset smoke --synth-images 120 --epochs 2 --batch-size 16 --device cpu --quiet".split()
    command = [sys.executable, "-m", "mtlbench.cli", "run", "--methods", methods, *flags]
    command += ["--results", str(results), "--data-dir", str(workdir / "data")]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the sweep failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    digests: dict = {}
    for table, table_rows in computed_results(results).items():
        for method, seed, _config_hash, *values in table_rows:  # not the method's name nor its config's hash:
            # a renamed method, or a new config field that leaves the numbers alone, keeps its digest
            digests.setdefault(method, hashlib.sha256()).update(table.encode() + repr((seed, *values)).encode())
    return {method: h.hexdigest() for method, h in digests.items()}


def main() -> None:
    """Run the sweep; print, save or compare its digests."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="all")
    parser.add_argument("--out", help="write the digests to this JSON file")
    parser.add_argument("--keep", help="keep the sweep's database at this path (to compare tables)")
    parser.add_argument("--compare", help="a JSON file of digests written earlier by --out")
    parser.add_argument("--rename", action="append", default=[], help="OLD=NEW: the baseline's OLD is today's NEW")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        digests = sweep_digests(args.methods, Path(tmp), Path(args.keep) if args.keep else None)
    print(json.dumps(digests, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(digests, indent=1) + "\n")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        renames = dict(r.split("=", 1) for r in args.rename)
        differ = []
        for old, digest in before.items():
            new = renames.get(old, old)
            same = digests.get(new) == digest
            print(f"{old:>14} → {new:<16} {'identical' if same else 'DIFFERENT' if new in digests else 'missing'}")
            differ += [] if same else [old]
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
