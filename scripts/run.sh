#!/usr/bin/env bash
# The main job: sets up, builds, and runs a 4-node cluster on a sim world.
# Usage: scripts/run.sh [ranks] [nodes] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh 5.4
exec lua5.4 scripts/cluster.lua "$@"
