#!/usr/bin/env bash
# The CleanCLIP research code against tacleaner on one GPU (the device tool), in one call:
# benchmarks/bench_research.py --device cuda (RN50, 224 px, batch 128, their 8 DataLoader workers
# for both sides; theirs fp16 autocast + GradScaler through their own train(); ours bf16, NCHW and
# channels-last), then the tests marked gpu. Figures go to $OUT/research_gpu.json.
# Carry [".whl", ".nltk", ".spacy", ".cleanclip"]: the first three from benchmarks/make_gpu_carry.sh,
# .cleanclip their code, read-only, e.g. from a clone of github.com/nishadsinghi/CleanCLIP:
#     mkdir .cleanclip && git -C <clone> archive HEAD src pkgs utils backdoor | tar -x -C .cleanclip
# (their src/data.py needs pandas, which the device image has; wandb is replaced by a no-op module).
# Arguments go to bench_research.py (e.g. --steps 10 --no-memory to stay short).
set -euo pipefail
source "$(dirname "$0")/gpu_env.sh"
python3 benchmarks/bench_research.py --cleanclip .cleanclip --device cuda --model RN50 --batch-size 128 \
    --steps 30 --repeats 3 --threads 8 --out "${OUT:-/tmp}/research_gpu.json" "$@"
if [ -z "${SKIP_TESTS:-}" ]; then
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py > "${OUT:-/tmp}/gpu_tests.txt" 2>&1 \
        && echo "tests marked gpu: passed" || echo "tests marked gpu: FAILED"
    tail -5 "${OUT:-/tmp}/gpu_tests.txt"
fi
