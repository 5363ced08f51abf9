# Shared by run_study.sh and run_paper_rows.sh: the environment and the grid call of the Dubai CPU study.
# Two grid processes of one thread each share the 2-core machine (two 1-thread processes get more done than one
# 2-thread process); the grid skips runs that already have a results.json, so an interrupted study resumes.
# Needs: make install; .venv/bin/ctseg prepare dubai --src ../shared/data/dubai-aerial --dst data/dubai
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=${OUT:-runs/grid/dubai-cpu}
C=dubai/cpu
mkdir -p "$OUT"
grid() { .venv/bin/ctseg grid --data-seed --out "$OUT" "$@" -- --trainer.enable_progress_bar false; }
