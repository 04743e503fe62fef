#!/usr/bin/env bash
# Start the local single-node SLURM cluster (no-op when it is already up), then point your
# shell at it:  eval "$(slurm/start.sh --env)"   or   export SLURM_CONF=<state dir>/etc/slurm.conf
# State folder: $SLBENCH_SLURM_DIR or /tmp/slbench-slurm (or --dir DIR). Needs root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ "${1:-}" = "--env" ]; then
  shift
  python3 "$here/cluster.py" start "$@" >&2
  exec python3 "$here/cluster.py" env "$@"
fi
exec python3 "$here/cluster.py" start "$@"
