#!/usr/bin/env bash
# The Dubai CPU study (issue 10), exactly as it was run: two grid processes of one thread each on the 2-core
# machine (one process with 2 threads is slower than two with 1), core configs with 3 seeds, ablations 1 seed.
# Needs: make install; ctseg prepare dubai --src ../shared/data/dubai-aerial --dst data/dubai
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=${OUT:-runs/grid/dubai-cpu}
C=configs/dubai/cpu
mkdir -p "$OUT"
(
  .venv/bin/ctseg grid --configs $C/baseline.yaml $C/cl.yaml --seeds 3 --data-seed --out "$OUT" -- --trainer.enable_progress_bar false
  .venv/bin/ctseg grid --configs $C/cl-hf025.yaml $C/cl-deep.yaml --seeds 1 --data-seed --out "$OUT" -- --trainer.enable_progress_bar false
) > "$OUT/worker_a.log" 2>&1 &
(
  .venv/bin/ctseg grid --configs $C/infonce.yaml $C/mscs.yaml --seeds 3 --data-seed --out "$OUT" -- --trainer.enable_progress_bar false
  .venv/bin/ctseg grid --configs $C/cl-hf100.yaml $C/cl-edge.yaml --seeds 1 --data-seed --out "$OUT" -- --trainer.enable_progress_bar false
) > "$OUT/worker_b.log" 2>&1 &
wait
.venv/bin/ctseg report "$OUT" --out results/dubai --highlight ct-cl
