#!/bin/sh
# `make demo`: the main job on the bundled default model, offline: reports for the example studies
# (synthetic radiographs), one printed in full, all of them as JSONL, then scored against the
# reports the studies were generated with.
set -eu
CRRG=.venv/bin/crrg
OUT=demo_output
mkdir -p "$OUT"

echo "== models shipped with crrg"
$CRRG models list

echo
echo "== one study (frontal + lateral): examples/heart-failure_*.png"
$CRRG report examples/heart-failure_frontal.png examples/heart-failure_lateral.png \
    --indication "Decreased breath sounds at the base."

echo
echo "== all example studies -> $OUT/reports.jsonl (resumable batch)"
rm -f "$OUT/reports.jsonl"
$CRRG report examples/manifest.jsonl --out "$OUT/reports.jsonl"

echo
echo "== scored against the ground-truth reports (4 studies: a smoke test, not a benchmark)"
$CRRG evaluate --pred "$OUT/reports.jsonl" --ref examples/manifest.jsonl --out "$OUT/metrics.json"
echo
echo "Done. Reports: $OUT/reports.jsonl, metrics: $OUT/metrics.json. Serve them with: $CRRG serve --model crrg-default"
