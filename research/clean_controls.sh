#!/usr/bin/env bash
# Clean models for measuring the scan's false-positive rate: each world's pretrained model of a
# finished grid fine-tuned without poison, five ways (the implant set at the implant's schedule
# with two more seeds, at twice and at 0.4 times its rate, and CleanCLIP on the clean split at
# the demo's schedule). Written where research/scan_grid.py --controls looks for them:
#   research/clean_controls.sh runs/trigger-free runs/controls 10 11 12
# A finished model is skipped, so the script resumes.
set -euo pipefail
run=$1; out=$2; shift 2
tac=${TACLEANER:-tacleaner}
common=(--quiet --batch-size 128 --threads 1)
for w in "$@"; do
  data=$run/world$w/data
  init=$run/world$w/pretrain/model.safetensors
  dest=$out/$(basename "$run")/world$w
  train() {  # name, then the options that differ
    local name=$1; shift
    [ -f "$dest/$name/model.safetensors" ] && return 0
    "$tac" "$@" --out "$dest/$name" "${common[@]}" $( [ -d "$dest/$name" ] && echo --resume )
  }
  train implant-seed1 train --init "$init" --data "$data/implant.csv" --epochs 4 --lr 5e-4 --warmup-steps 20 --seed 1
  train implant-seed2 train --init "$init" --data "$data/implant.csv" --epochs 4 --lr 5e-4 --warmup-steps 20 --seed 2
  train implant-lr1e-3 train --init "$init" --data "$data/implant.csv" --epochs 4 --lr 1e-3 --warmup-steps 20 --seed 3
  train implant-lr2e-4 train --init "$init" --data "$data/implant.csv" --epochs 8 --lr 2e-4 --warmup-steps 20 --seed 4
  train cleanclip-clean clean --defense cleanclip --checkpoint "$init" --data "$data/clean.csv" --epochs 4 \
    --lr 1.5e-3 --warmup-steps 20 --seed 5 --param w_inmodal=0.5
done
