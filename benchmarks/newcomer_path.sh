#!/usr/bin/env bash
# The newcomer's path on a clean clone, timed step by step: install, the demo, the tests, the own-data example,
# the mapping-a-city example (the README's commands), the docs build and the wheel. Prints one Markdown table
# (step, seconds, 1-minute load before → after) for benchmarks/README.md, and the machine it ran on.
#   bash benchmarks/newcomer_path.sh [REPO_URL_OR_PATH] [--skip-tests]
# REPO defaults to this checkout's committed HEAD (cloned into a temporary folder, so nothing here is touched).
# Needs only python3 and git; the install step downloads what `make install` downloads.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=${1:-$here}
skip_tests=${2:-}
work=$(mktemp -d /tmp/ctseg-newcomer-XXXXXX)
trap 'rm -rf "$work"' EXIT
rows=()
load() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }
step() {  # step NAME COMMAND...
  local name=$1; shift
  local before t0 t1
  before=$(load); t0=$(date +%s.%N)
  ( "$@" ) > "$work/$name.log" 2>&1 || { echo "step '$name' failed; its log:" >&2; tail -20 "$work/$name.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  rows+=("| $name | $(python3 -c "print(f'{$t1 - $t0:.0f}')") | $before → $(load) |")
}
git clone -q "$repo" "$work/ctseg"
cd "$work/ctseg"
step "make install" make install
step "make demo" make demo
if [[ "$skip_tests" != "--skip-tests" ]]; then step "make test" make test; fi
step "own data: prepare" bash -c '.venv/bin/python tests/helpers/make_folder.py out/tiles &&
  .venv/bin/ctseg prepare folder --src out/tiles --classes out/tiles/classes.yaml --dst data/mine --crop 96'
step "own data: fit (40 steps)" .venv/bin/ctseg fit --config folder/cpu-cl --data.root data/mine \
  --trainer.max_steps 40 --trainer.val_check_interval 20 --model.img_size 96 --data.image_size 96 \
  --trainer.default_root_dir runs/mine --trainer.enable_progress_bar false
step "own data: test + predict" bash -c '.venv/bin/ctseg test --config folder/cpu-cl --data.root data/mine \
  --model.img_size 96 --data.image_size 96 --trainer.default_root_dir runs/mine --ckpt_path last &&
  .venv/bin/ctseg predict --ckpt runs/mine/checkpoints/last.ckpt out/tiles/images/scene_0.tif --out out/predictions'
step "city: tiles → predict → polygons" bash -c '.venv/bin/python tests/helpers/make_city.py out/city &&
  .venv/bin/ctseg predict --ckpt runs/mine/checkpoints/last.ckpt out/city/city.vrt --out out/maps --confidence \
    --window 128 &&
  .venv/bin/ctseg vectorize out/maps/city_pred.tif --classes building --confidence out/maps/city_conf.tif \
    --min-area 2 --out out/maps/buildings.gpkg'
if grep -q "^docs:" Makefile; then step "make docs" make docs; fi
step "wheel" .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheel" .
test -z "$(git status --porcelain --untracked-files=normal)" || { echo "the path left files git does not ignore:" >&2; git status --short >&2; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "commit: $(git rev-parse --short HEAD); wheel: $(du -k "$work"/wheel/*.whl | cut -f1) KiB"
echo
echo "| step | seconds | load (1 min) before → after |"
echo "|---|---:|---|"
printf '%s\n' "${rows[@]}"
