#!/usr/bin/env bash
# Stopwatch for the README's "Your first study": clone this repository into a temporary
# folder and run the section's commands (its bash blocks, as printed there) with a stopwatch.
# Not part of `make test`. Usage:
#   tools/first_study.sh                 # set up .venv with `make setup` (needs the network)
#   VENV=/path/to/.venv tools/first_study.sh   # reuse an installed venv (offline machines):
#                                        # .venv links to it, PYTHONPATH points at the clone
# Prints the wall time of each command and the total, clone to report.
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s.%N)
git clone -q "$repo" "$tmp/slbench"
cd "$tmp/slbench"
if [[ -n "${VENV:-}" ]]; then
    ln -s "$VENV" .venv
    export PYTHONPATH="$PWD"   # the clone's code, with the venv's packages
fi
# the section's blocks: from "## Your first study" to the next "## "
section=$(awk '/^## Your first study/{on=1; next} /^## /{on=0} on' README.md)
spec=$(awk '/^```toml/{on=1; next} /^```/{on=0} on' <<<"$section")
path=$(head -1 <<<"$spec" | sed 's/^# //')
mapfile -t cmds < <(awk '/^```bash/{on=1; next} /^```/{on=0} on' <<<"$section" \
                    | sed 's/ *#.*$//' | grep -v '^$')
for cmd in "${cmds[@]}"; do
    if [[ "$cmd" == "make setup" && -n "${VENV:-}" ]]; then
        echo "skipped: $cmd (VENV given)"; continue
    fi
    if [[ "$cmd" == .venv/bin/python* && ! -e "$path" ]]; then
        printf '%s\n' "$spec" > "$path"     # "Save this spec as studies/mine.toml"
    fi
    s=$(date +%s.%N)
    bash -c "$cmd" > "$tmp/out.txt" 2>&1 || { cat "$tmp/out.txt"; echo "FAILED: $cmd"; exit 1; }
    printf '%7.1f s  %s\n' "$(echo "$(date +%s.%N) - $s" | bc)" "$cmd"
done
test -f results/mine/report/report.md
printf 'clone to report: %.1f s wall (%s, %s cores, load %s)\n' \
    "$(echo "$(date +%s.%N) - $t0" | bc)" "$(hostname)" "$(nproc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
