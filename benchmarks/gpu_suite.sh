#!/usr/bin/env bash
# Every GPU measurement of issue 6 in two calls of at most 10 minutes each, for a session that is
# lent a GPU machine (H100/H200). Writes markdown tables and logs to $OUT (default ./gpu-out).
#
#   benchmarks/gpu_suite.sh setup      # install mtlbench there (wheels from .whl/, see below)
#   benchmarks/gpu_suite.sh part1      # ceiling + pipeline at 224 px b128 bf16, step cost + largest batch
#   benchmarks/gpu_suite.sh part2      # ceiling in tf32 and fp32, synthetic generation at 224 px
#   benchmarks/gpu_suite.sh checks     # the CLI on CUDA: smoke sweep, deterministic repeat, kill and resume
#   benchmarks/gpu_suite.sh tests      # the CUDA tests (host syncs under sync-debug mode, backend, grads, train)
#   benchmarks/gpu_suite.sh dry-run    # the same plumbing on the CPU at toy sizes (checks the script, not the GPU)
#
# The GPU machine has PyTorch but not torchxrayvision (the NIH tables) nor medmnist. Before the
# call, here, download their wheels for its Python 3.12 into .whl/ (ignored by git, 28 MiB):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl torchxrayvision==1.5.7 medmnist==3.0.2 fire termcolor
# and name .whl in the call's carry. First call: `setup part1 checks tests`; second: `setup part2`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

setup() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
    python3 -c "import torch, mtlbench; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt" || true
}

# Each stage has a time limit (seconds) so that one hung stage cannot eat the whole device call.
bench() {  # bench NAME LIMIT SCRIPT ARGS...: run a benchmark script, keep its table and its log
    local name=$1 limit=$2 script=$3
    shift 3
    (cd benchmarks && timeout "$limit" python3 "$script" "$@" --out "$OUT/$name.md") 2>&1 | tee "$OUT/$name.log" \
        | tail -25 || echo "FAILED or timed out after $limit s: $name (see $name.log)"
}

part1() {
    bench ceiling_224_b128_bf16 120 ceiling.py --device cuda --precision bf16 --image-size 224 --batch-size 128 \
        --images 12000 --epochs 2 --data-dir /tmp/mtlbench-data
    bench step_cost_224_b128_bf16 200 step_cost.py --device cuda --precision bf16 --image-size 224 \
        --batch-size 128 --rounds 2 --steps 5 --max-batch --search-seconds 8
}

checks() {
    bench gpu_checks 150 gpu_checks.py --device cuda --workdir /tmp/mtlbench-checks
}

tests() {
    timeout 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_host_syncs.py tests/test_backend.py \
        tests/test_grads.py tests/test_train.py 2>&1 | tee "$OUT/tests.log" | tail -15 \
        || echo "FAILED or timed out: tests (see tests.log)"
}

part2() {
    bench ceiling_224_b128_tf32 60 ceiling.py --device cuda --precision tf32 --image-size 224 --batch-size 128 \
        --images 12000 --epochs 2 --data-dir /tmp/mtlbench-data
    bench ceiling_224_b128_fp32 60 ceiling.py --device cuda --precision fp32 --image-size 224 --batch-size 128 \
        --images 12000 --epochs 1 --data-dir /tmp/mtlbench-data
    bench ceiling_224_b128_bf16_compiled 150 ceiling.py --device cuda --precision bf16 --compile --image-size 224 \
        --batch-size 128 --images 12000 --epochs 2 --data-dir /tmp/mtlbench-data
    bench synth_generation_224 60 synth_generation.py --count 12000 --size 224
}

dry_run() {
    bench dry_ceiling 120 ceiling.py --device cpu --image-size 32 --batch-size 32 --images 300 --epochs 1 --steps 2 \
        --warmup 1 --matmul-n 256
    bench dry_step_cost 120 step_cost.py --device cpu --image-size 32 --batch-size 16 --rounds 1 --steps 1 --warmup 1 \
        --methods ew,deepchest,mgda-ub
}

for stage in "$@"; do
    case $stage in
        setup) setup ;;
        part1) part1 ;;
        part2) part2 ;;
        checks) checks ;;
        tests) tests ;;
        dry-run) dry_run ;;
        *) echo "unknown stage $stage (setup | part1 | part2 | checks | tests | dry-run)" >&2; exit 2 ;;
    esac
done
