#!/usr/bin/env bash
# The main job: sets up, builds, and runs an experiment in the lab
# (`csm experiment`): 16 reference nodes, 5 of them equivocating proposers,
# 5 % message loss, 200 ranks. It prints a report and writes timeline.svg
# (in the current directory). Arguments replace all of those defaults: see
# `scripts/run.sh --help`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
if [ $# -eq 0 ]; then
  set -- --nodes 16 --byzantine 5:equivocate --loss 0.05 --seed 7 --ranks 200 --svg timeline.svg
fi
exec lua5.4 "$root/bin/csm" experiment "$@"
