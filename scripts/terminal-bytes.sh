#!/usr/bin/env bash
# Bytes the console writes to its terminal per second, measured from outside: tmux's
# pipe-pane copies everything the program writes to the pane into a file.
#
#   scripts/terminal-bytes.sh [STACK_FILE] [SECONDS]     (default: the demo stack, 10 s)
#
# Needs tmux and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SWITCHBOARD:-target/release/switchboard}
stack=${1:-}
secs=${2:-10}
sock="sb-bytes-$$"
out=$(mktemp)
trap 'tmux -L "$sock" kill-server 2>/dev/null || true; rm -f "$out"' EXIT
tmux -L "$sock" new-session -d -s m -x 120 -y 32 "$bin $stack"
sleep 4 # start-up and the first full draw are not what is measured
tmux -L "$sock" pipe-pane -o -t m "cat >> $out"
sleep "$secs"
tmux -L "$sock" pipe-pane -t m
bytes=$(stat -c %s "$out")
tmux -L "$sock" send-keys -t m q
sleep 0.3
tmux -L "$sock" send-keys -t m y
sleep 3
echo "${stack:-demo}: $bytes bytes in $secs s = $((bytes / secs)) B/s"
