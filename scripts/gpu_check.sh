#!/usr/bin/env bash
# The GPU check: every figure the GPU owes (bench against the reference loop, eager/compile/CUDA
# graphs, packed trainers, bf16 fidelity, the demo through the CLI) in one command, under 8 minutes
# on one H100 or H200. DEVELOPERS.md says how to run it on a bare GPU machine (the wheels it lacks).
#
#   scripts/gpu_check.sh OUTDIR              # on the GPU: OUTDIR/gpu_check.json and gpu_check.md
#   scripts/gpu_check.sh OUTDIR --dry-run    # on the CPU, tiny step counts (tests/test_gpu_check.py)
#   scripts/gpu_check.sh OUTDIR --parts modes,packed --budget 300
#
# PYTHON chooses the interpreter (default python3). This checkout goes first on PYTHONPATH: the GPU
# machine has rrdtui only as this folder, not installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m rrdtui.train.gpu_check "$@"
