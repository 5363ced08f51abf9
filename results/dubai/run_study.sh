#!/usr/bin/env bash
# The Dubai CPU study (issue 10), then its report: core configs and infonce-scale with 3 seeds, the CL ablations
# with 1 seed.
# Two grid processes of one thread each share the 2-core machine (two 1-thread processes get more done than one
# 2-thread process); the grid skips runs that already have a results.json, so an interrupted study resumes.
# Needs: make install; .venv/bin/ctseg prepare dubai --src ../shared/data/dubai-aerial --dst data/dubai
set -euo pipefail
cd "$(dirname "$0")/../.."
source results/dubai/grid_env.sh
(
  grid --configs $C/baseline.yaml $C/cl.yaml --seeds 3
  grid --configs $C/cl-hf025.yaml $C/cl-deep.yaml --seeds 1
  grid --configs $C/cl-edge.yaml --seeds 1
  grid --configs $C/infonce-scale.yaml --first-seed 1 --seeds 2
) > "$OUT/worker_a.log" 2>&1 &
(
  grid --configs $C/infonce.yaml $C/mscs.yaml --seeds 3
  grid --configs $C/cl-hf100.yaml --seeds 1
  grid --configs $C/infonce-scale.yaml --seeds 1
) > "$OUT/worker_b.log" 2>&1 &
wait
.venv/bin/ctseg report "$OUT" --out results/dubai --highlight ct-cl
.venv/bin/python results/dubai/summarize.py "$OUT" > results/dubai/summary.md
