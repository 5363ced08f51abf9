#!/usr/bin/env bash
# Issue 15 §6: the Dubai CPU study's CL rows again with the authors' reduction (dubai/cpu/cl-paper),
# 3 seeds, the same budget as the first rows; into the same grid folder, so the report puts them side by side.
# Two grid processes of one thread each share the 2-core machine (as run_study.sh).
# Needs: make install; .venv/bin/ctseg prepare dubai --src ../shared/data/dubai-aerial --dst data/dubai
set -euo pipefail
cd "$(dirname "$0")/../.."
source results/dubai/grid_env.sh
grid --configs $C/cl-paper.yaml --seeds 2 > "$OUT/worker_paper_a.log" 2>&1 &
grid --configs $C/cl-paper.yaml --first-seed 2 --seeds 1 > "$OUT/worker_paper_b.log" 2>&1 &
wait
