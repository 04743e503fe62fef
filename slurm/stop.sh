#!/usr/bin/env bash
# Stop the local SLURM cluster (cancels its jobs). `slurm/stop.sh --wipe` also deletes its state.
set -euo pipefail
exec python3 "$(cd "$(dirname "$0")" && pwd)/cluster.py" stop "$@"
