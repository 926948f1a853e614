#!/usr/bin/env bash
# The headless browser the report tests render `tacleaner audit`'s report.html in: Debian's
# chromium. Installed with apt-get when run as root; otherwise the command to run is printed.
# Only the test suite needs it (`make test`); `tacleaner audit` itself does not.
set -euo pipefail
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null; then exit 0; fi
done
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  echo "chromium not found: run 'sudo apt-get install chromium' (the report tests render report.html in it)" >&2
  exit 1
fi
