#!/usr/bin/env bash
# Vanilla, KD and RRD students of one Fashion-MNIST teacher, three seeds each, then the table.
# Usage: scripts/fmnist_study.sh [RUNS_DIR]    (default ./runs; the teacher trains once, first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
for seed in 0 1 2; do
  for method in none kd rrd; do
    uv run rrdtui run presets/fmnist_student.yaml --runs "$runs" \
      --set method.name=$method --set seed=$seed --set name=fmnist_$method --set group=fmnist_study
  done
done
uv run python scripts/seed_table.py --runs "$runs" fmnist_none fmnist_kd fmnist_rrd
