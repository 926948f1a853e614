#!/usr/bin/env bash
# Reruns tacleaner's CPU experiments on another machine (a different CPU model and torch build:
# what the README's "What another machine should expect" is about), several at once, each with
# stages in parallel (--jobs; each stage's thread count is fixed by its config, so the numbers
# do not depend on it). The GPU is hidden: these are CPU runs. Arguments: NAME=JOBS pairs, NAME
# `demo` for `tacleaner demo`, else an experiment YAML; default `demo=9
# experiments/demo-worlds.yaml=7`. Reports and every stage's eval.json land in $OUT/reports.tgz
# (<name>/...), each run's output in $OUT/<name>.txt.
# For a machine without network, such as the device tool's: carry .xcarry/
# (benchmarks/make_cross_carry.sh). Here: PYTHON=.venv/bin/python NO_XCARRY=1 bash benchmarks/cross_machine.sh
set -euo pipefail
py=${PYTHON:-python3}
if [ -d .xcarry ] && [ -z "${NO_XCARRY:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .xcarry/whl/*.whl
    tar -xJf .xcarry/spsite.txz -C /tmp && mkdir -p /tmp/nltk && tar -xJf .xcarry/nltk_data.txz -C /tmp/nltk
    export PYTHONPATH=/tmp/site:/tmp/spsite:$PWD/src NLTK_DATA=/tmp/nltk/nltk_data
fi
export CUDA_VISIBLE_DEVICES="" PYTHONUNBUFFERED=1
out=${OUT:-/tmp/cross} runs=/tmp/cross-runs
mkdir -p "$out" "$runs"
{ lscpu | grep -E "Model name|^CPU\(s\)|^Flags" | cut -c1-300
  "$py" -c "import torch, numpy, open_clip; print('torch', torch.__version__, 'numpy', numpy.__version__, 'open_clip', open_clip.__version__)"
} | tee "$out/machine.txt"
[ $# -gt 0 ] || set -- demo=9 experiments/demo-worlds.yaml=7
names=() pids=()
start=$(date +%s)
for arg in "$@"; do
    what=${arg%=*} jobs=${arg##*=} name=$(basename "${arg%=*}" .yaml)
    if [ "$what" = demo ]; then
        "$py" -m tacleaner demo --out "$runs/$name" --jobs "$jobs" > "$out/$name.txt" 2>&1 &
    else
        "$py" -m tacleaner run "$what" --out "$runs/$name" --jobs "$jobs" > "$out/$name.txt" 2>&1 &
    fi
    names+=("$name") pids+=($!)
done
collect() {  # the reports and every stage's evaluation, as one archive (the device tool brings back few files)
    (cd "$runs" && find . \( -name "*eval.json" -o -name results.json -o -name aggregate.json -o -name results.md \
        -o -name environment.json -o -name log.txt \) -not -path "*/data/*" -print0 \
        | tar -czf "$out/reports.tgz" --null -T -) 2>/dev/null || true
    return 0
}
trap collect EXIT
trap 'collect; exit 143' TERM INT
for i in "${!names[@]}"; do
    rc=0; wait "${pids[$i]}" || rc=$?
    echo "${names[$i]} exit $rc after $(( $(date +%s) - start )) s" | tee -a "$out/machine.txt"
done
