#!/usr/bin/env bash
# Re-make the files of this folder with the code from before the issue-29 package move (commit 45d22a6, the parent
# of 3226f40), so that tests/checkpoints/test_premove.py holds today's code to what that code wrote:
#   git worktree add /tmp/premove 45d22a65cb936c903eaeb3de16f4a36bd41e8cc3
#   bash tests/checkpoints/premove/make.sh /tmp/premove
# premove.ckpt: `ctseg fit` of config.yaml (2 steps, CT-CL, a UNetFormer over timm's test_efficientnet, so that the
# file stays small; optimizer state kept, so it resumes); premove.safetensors: `ctseg export` of it.
set -euo pipefail
old_tree=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../../../.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export HF_HUB_OFFLINE=1 PYTHONPATH="$old_tree/src"
"$py" -m ctseg.cli fit --config "$here/config.yaml" --trainer.default_root_dir run
"$py" -m ctseg.cli export run/checkpoints/last.ckpt premove.safetensors
cp run/checkpoints/last.ckpt "$here/premove.ckpt"
cp premove.safetensors "$here/premove.safetensors"
