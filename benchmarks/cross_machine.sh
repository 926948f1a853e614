#!/usr/bin/env bash
# Reruns `tacleaner demo` and the demo-worlds grid on another machine's CPUs (a different CPU
# model and torch build: what the README's "What another machine should expect" is about), with
# stages in parallel (--jobs; each stage's thread count is fixed by the config, so the numbers do
# not depend on it). For a machine without network, such as the device tool's: carry .xcarry/
# (benchmarks/make_cross_carry.sh). The GPU is hidden: these are CPU runs.
#   run: bash benchmarks/cross_machine.sh        (results under $OUT/demo, $OUT/demo-worlds)
# WORLD_CLEAN_SEEDS=0 keeps one cleaning seed per world in the demo-worlds grid (shorter).
set -euo pipefail
if [ -d .xcarry ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .xcarry/whl/*.whl
    tar -xJf .xcarry/spsite.txz -C /tmp && mkdir -p /tmp/nltk && tar -xJf .xcarry/nltk_data.txz -C /tmp/nltk
    export PYTHONPATH=/tmp/site:/tmp/spsite:$PWD/src NLTK_DATA=/tmp/nltk/nltk_data
fi
export CUDA_VISIBLE_DEVICES="" PYTHONUNBUFFERED=1
out=${OUT:-/tmp/cross} runs=/tmp/cross-runs
mkdir -p "$out" "$runs"
{ lscpu | grep -E "Model name|^CPU\(s\)|^Flags" | cut -c1-300
  python3 -c "import torch, numpy, open_clip; print('torch', torch.__version__, 'numpy', numpy.__version__, 'open_clip', open_clip.__version__)"
} | tee "$out/machine.txt"
sed "s/clean: \[0, 1\]}/clean: [${WORLD_CLEAN_SEEDS:-0, 1}]}/" experiments/demo-worlds.yaml > "$runs/demo-worlds.yaml"
start=$(date +%s)
python3 -m tacleaner demo --out "$runs/demo" --jobs "${DEMO_JOBS:-9}" > "$out/demo.txt" 2>&1 &
demo=$!
python3 -m tacleaner run "$runs/demo-worlds.yaml" --out "$runs/demo-worlds" --jobs "${WORLD_JOBS:-7}" > "$out/worlds.txt" 2>&1 &
worlds=$!
collect() {  # the reports only: checkpoints stay behind
    for r in demo demo-worlds; do
        mkdir -p "$out/$r"
        for f in results.json aggregate.json results.md environment.json log.txt; do
            [ -f "$runs/$r/$f" ] && cp "$runs/$r/$f" "$out/$r/"
        done
    done
    return 0
}
trap collect EXIT
trap 'collect; exit 143' TERM INT
rc=0; wait $demo || rc=$?; echo "demo exit $rc after $(( $(date +%s) - start )) s" | tee -a "$out/machine.txt"
rc=0; wait $worlds || rc=$?; echo "demo-worlds exit $rc after $(( $(date +%s) - start )) s" | tee -a "$out/machine.txt"
