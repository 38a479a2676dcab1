#!/usr/bin/env bash
# The main job: sets up, builds, and runs an experiment in the lab
# (`csm experiment`): 16 reference nodes, 5 of them equivocating proposers,
# 5 % message loss, 200 ranks. It prints a report and writes timeline.svg.
# Arguments replace the defaults: see `scripts/run.sh --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- --nodes 16 --byzantine 5:equivocate --loss 0.05 --seed 7 --ranks 200 --svg timeline.svg
fi
exec lua5.4 bin/csm experiment "$@"
