#!/usr/bin/env bash
# Install the pinned Python dependencies (requirements.txt, every version fixed by
# constraints.txt) into the virtual environment $1. With uv where it can be had: it unpacks and
# byte-compiles in parallel (32 s against pip's 97 s for the same versions on a 2-core Xeon,
# 2026-12-08; docs/research/benchmarks.md), else, or when uv fails, with pip. uv does not read pip's
# configuration, so the package sources pip is configured with (pip.conf or PIP_* variables:
# index-url, extra-index-url, find-links, constraint) are handed to it. TACLEANER_NO_UV=1 uses pip.
set -euo pipefail
venv="${1:?usage: install_python_deps.sh VENV}"
pip="$venv/bin/pip"
deps=(-r requirements.txt -c constraints.txt)
if [ -z "${TACLEANER_NO_UV:-}" ] && "$pip" install -q uv >/dev/null 2>&1; then
  mapfile -t sources < <("$pip" config list 2>/dev/null | "$venv/bin/python" -c '
import shlex, sys
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}
for line in sys.stdin:
    key, _, value = line.strip().partition("=")
    flag = flags.get(key.rpartition(".")[2])
    if flag:
        for v in shlex.split(value)[0].split() if value else []:
            print(flag); print(v)
')
  if VIRTUAL_ENV="$venv" "$venv/bin/uv" pip install -q --compile-bytecode --index-strategy unsafe-best-match \
       "${sources[@]}" "${deps[@]}"; then
    exit 0
  fi
  echo "install_python_deps.sh: uv failed; installing with pip" >&2
fi
"$pip" install -q "${deps[@]}"
