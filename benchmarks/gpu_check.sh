#!/usr/bin/env bash
# One accelerator check (benchmarks/gpu_check.py): correctness against the CPU, throughput, and
# the paper presets' cost; logs and gpu_check.json in OUT_DIR. About 5 minutes on one GPU.
#   benchmarks/gpu_check.sh OUT_DIR [--quick]     # on the GPU machine (jax with CUDA, no network)
#   benchmarks/gpu_check.sh OUT_DIR --cpu         # dry run on the CPU backend, tiny sizes
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: benchmarks/gpu_check.sh OUT_DIR [--quick] [--cpu]" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$1"; shift
mkdir -p "$out" || exit 2
py="${PYTHON:-$( [ -x "$root/.venv/bin/python" ] && echo "$root/.venv/bin/python" || echo python3 )}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
"$py" "$root/benchmarks/gpu_check.py" "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
