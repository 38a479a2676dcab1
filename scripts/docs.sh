#!/usr/bin/env bash
# Builds the API reference (docs/api/index.html) with LDoc from the doc
# comments of lua/csm and of the binding's C files (docs/config.ld); fails
# on any LDoc warning.
# Usage: scripts/docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh lua-ldoc lua-markdown
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rm -rf docs/api
ldoc -c docs/config.ld . >/dev/null 2>"$log" || { cat "$log"; exit 1; }
if [ -s "$log" ]; then
  echo "docs: LDoc warned:" >&2
  cat "$log" >&2
  exit 1
fi
echo "docs: wrote docs/api/index.html ($(ls docs/api/modules | wc -l) modules)"
