#!/usr/bin/env bash
# Rebuild the bundled crrg-default from nothing, in one command:
#   synthetic studies -> CLIP -> finding classifier (linear probe on the CLIP tower) -> the five rrg
#   stages (detector, classifiers, pretrain, language, joint) -> a float16 model folder.
# No machine paths and no warm start from the shipped weights: every step starts from random weights
# (the text tower is the bundled MiniLM) and each one resumes where it stopped when run again.
#
#   scripts/train_default.sh [--toy] [--out DIR] [--data DIR] [--workers N]
#
#   --toy      a few-minute end-to-end check at toy size (48 studies at 128 px, a few steps per stage)
#   --out      run folder (default runs/default, runs/default-toy with --toy); the model lands in OUT/crrg-default
#   --data     where the synthetic studies go (default OUT/data); an existing manifest.jsonl there is reused
#   --workers  synth worker processes (default 2)
# Environment: PYTHON (default .venv/bin/python), CRRG_SHARED_DATA (adds the IU X-Ray reports to the
# language-model corpus when DIR/iu_xray_reports/NLMCXR_reports.tgz exists).
# To ship the result: python scripts/export_default_model.py OUT/rrg/joint/model --version X.Y.Z
set -euo pipefail
cd "$(dirname "$0")/.."

TOY=0; OUT=""; DATA=""; WORKERS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --toy) TOY=1 ;;
    --out) OUT="$2"; shift ;;
    --data) DATA="$2"; shift ;;
    --workers) WORKERS="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-.venv/bin/python}"
if [ "$TOY" = 1 ]; then OUT="${OUT:-runs/default-toy}"; else OUT="${OUT:-runs/default}"; fi
DATA="${DATA:-$OUT/data}"
CRRG=("$PY" -m crrg --quiet)
STEPS=()
if [ "$TOY" = 1 ]; then
  N=48; SIZE=128
  # a few steps of everything, small batches, little validation
  SHORT=(--set trainer.max_epochs=null --set trainer.max_steps=3 --set trainer.batch_size=8 --set trainer.limit_val_batches=2)
  CLIP_SET=("${SHORT[@]}")
  CLF_SET=("${SHORT[@]}")
  for stage in detector classifiers pretrain language joint; do
    STEPS+=(--set "stages.$stage.trainer.max_epochs=null" --set "stages.$stage.trainer.max_steps=2"
            --set "stages.$stage.trainer.batch_size=4" --set "stages.$stage.trainer.limit_val_batches=2")
  done
  STEPS+=(--set corpus.max_texts=400)
else
  N=5000; SIZE=256
  CLIP_SET=(); CLF_SET=()
fi
SHARED="${CRRG_SHARED_DATA:-../shared/data}"
IU="$SHARED/iu_xray_reports/NLMCXR_reports.tgz"
CORPUS=()
if [ -f "$IU" ]; then CORPUS=(--set "corpus.iu_xray=$IU"); fi

stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
done_model() { [ -f "$1/model/config.json" ]; }
START=$(date +%s)

stamp "1/5 synthetic studies: $N at ${SIZE}px -> $DATA"
if [ ! -f "$DATA/manifest.jsonl" ]; then
  "${CRRG[@]}" synth generate --out "$DATA" --n "$N" --size "$SIZE" --seed 0 --workers "$WORKERS"
fi
M="$DATA/manifest.jsonl"

stamp "2/5 CLIP -> $OUT/clip"
done_model "$OUT/clip" || "${CRRG[@]}" train clip --config configs/clip/default.yaml --data "$M" --out "$OUT/clip" --resume "${CLIP_SET[@]}"

stamp "3/5 finding classifier (linear probe on the CLIP tower) -> $OUT/classifier"
done_model "$OUT/classifier" || "${CRRG[@]}" train classifier --config configs/classifier/synth-linear-probe.yaml --data "$M" \
  --out "$OUT/classifier" --resume --set "model.from_clip=$OUT/clip/model" "${CLF_SET[@]}"

stamp "4/5 rrg stages -> $OUT/rrg/<stage>"
"${CRRG[@]}" train rrg --config configs/rrg/default.yaml --data "$M" --out "$OUT/rrg" --resume \
  --set "model.classifier=$OUT/classifier/model" "${CORPUS[@]}" "${STEPS[@]}"

stamp "5/5 export (float16) -> $OUT/crrg-default"
"$PY" - "$OUT/rrg/joint/model" "$OUT/crrg-default" <<'PYEOF'
import sys

import torch

from crrg.models.registry import load_pretrained, save_pretrained

model = load_pretrained(sys.argv[1])
model.crrg_config["version"] = "rebuilt"
save_pretrained(model, sys.argv[2], dtype=torch.float16)
print(sys.argv[2])
PYEOF
stamp "done in $(( $(date +%s) - START )) s: $OUT/crrg-default (crrg report --model $OUT/crrg-default STUDY)"
