#!/usr/bin/env bash
# Builds .xcarry/ (ignored, about 50 MB): what benchmarks/cross_machine.sh needs to run tacleaner's
# CPU experiments on another machine that has Python 3.12, torch, numpy and pillow but no
# network (the device tool's machines): wheels of open_clip_torch, ftfy, wcwidth, nltk and
# matplotlib (with its dependencies), spaCy 3.8 + en_core_web_sm with stripped modules and
# WordNet, both xz-compressed so that everything fits the tool's 64 MiB carry limit.
# Needs .spacy/ and .nltk/ from benchmarks/make_gpu_carry.sh and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_PYTHON_VERSION:-3.12}
plat=(--only-binary=:all: --python-version "$PY" --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64)
pin() { grep -i "^$1==" constraints.txt; }
rm -rf .xcarry && mkdir -p .xcarry/whl
python3 -m pip download -q --no-deps "${plat[@]}" -d .xcarry/whl "$(pin open_clip_torch)" "$(pin ftfy)" "$(pin wcwidth)" \
    "$(pin nltk)" "$(pin matplotlib)" "$(pin contourpy)" "$(pin cycler)" "$(pin fonttools)" "$(pin kiwisolver)" \
    "$(pin pyparsing)" "$(pin python-dateutil)"
tmp=$(mktemp -d)
tar -xzf .spacy/spsite.tgz -C "$tmp" && tar -xzf .nltk/nltk_data.tgz -C "$tmp"
tar -cf - -C "$tmp" spsite | xz -9 -T2 > .xcarry/spsite.txz
tar -cf - -C "$tmp" nltk_data | xz -9 -T2 > .xcarry/nltk_data.txz
rm -rf "$tmp"
du -sh .xcarry
