#!/usr/bin/env bash
# Every GPU check of issue 7 in one run, within a time budget, for a lent H100 / H200 (or any CUDA machine).
#
#   OUT=/tmp/gpu BUDGET=570 bash benchmarks/gpu_suite.sh
#
# Needs python3 with torch (CUDA), timm, lightning, torchmetrics, pillow, matplotlib, pytest; ctseg is taken from
# src/ (no install, no network). Steps, most important first; each gets min(its own limit, the time left), so a
# slow step cannot starve the suite of its summary:
#   1. train_eager     benchmarks/train_bench.py: ds-paper, bs 32, 512², bf16, channels-last; CT off vs on (time,
#                      peak memory), FLOPs/image, MFU, the CT loss under sync-debug "error", syncs in a whole step,
#                      images/s with data loading (synthetic prepared crops from the decoded cache)
#   2. infer           benchmarks/infer_bench.py: a 6000² tile, window 512, overlap 0.25, bf16
#   3. cuda_tests      the CUDA-only tests (sync-free CT and MS losses)
#   4. loader          benchmarks/loader_bench.py on the GPU host: PNG vs decoded cache, 0/2/4/8 workers
#   5. train_compiled  as 1, with torch.compile
# Writes $OUT/suite.log (every step's output), $OUT/<step>.json, $OUT/env.txt and $OUT/summary.txt: 7 files (a
# lent machine returns at most 8).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
BUDGET=${BUDGET:-570}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
DATA=${DATA:-/tmp/ctseg-synthetic}
START=$SECONDS

step() {  # step NAME LIMIT COMMAND...: run with min(LIMIT, time left - 10 s), output appended to $OUT/suite.log
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START) - 10))
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        echo "$name: skipped (budget spent)" | tee -a "$OUT/summary.txt"
        return
    fi
    local t0=$SECONDS
    echo "===== $name: $*" >>"$OUT/suite.log"
    timeout "$limit" "$@" >>"$OUT/suite.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $PY -c "import sys, torch, timm, lightning; print(sys.version.split()[0], 'torch', torch.__version__,
'timm', timm.__version__, 'lightning', lightning.__version__, 'cuda', torch.version.cuda)"
    nproc
} >"$OUT/env.txt" 2>&1

step prepare 60 $PY benchmarks/make_prepared.py "$DATA" --train 256 --test 16 --size 512
step train_eager 200 $PY benchmarks/train_bench.py --channels-last --workers 6 --data "$DATA" --decoded-cache \
    --json "$OUT/train_eager.json"
step infer 90 $PY benchmarks/infer_bench.py --json "$OUT/infer.json"
step cuda_tests 90 $PY -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests
step loader 90 $PY benchmarks/loader_bench.py --data "$DATA" --workers 0 2 4 8 --device cuda --json "$OUT/loader.json"
step train_compiled 300 $PY benchmarks/train_bench.py --channels-last --compile --workers 6 --data "$DATA" \
    --decoded-cache --json "$OUT/train_compiled.json"
echo "total: $((SECONDS - START)) s" | tee -a "$OUT/summary.txt"
