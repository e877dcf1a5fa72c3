#!/usr/bin/env bash
# Screenshots of the real console: tmux at a fixed size runs the release binary, keys set up
# each scene, `capture-pane -e` keeps the colours, aha turns them into HTML, and headless
# Chromium renders the PNG into screenshots/.
#
#   scripts/screenshots.sh
#
# Needs: tmux, aha, chromium (Debian packages), and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in tmux aha chromium; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install tmux aha chromium)" >&2; exit 1; }
done
cargo build --release --quiet
bin="$PWD/target/release/switchboard"
out="$PWD/screenshots"
mkdir -p "$out"
work=$(mktemp -d)
sock="sb-shots-$$"
trap 'tmux -L "$sock" kill-server 2>/dev/null || true; rm -rf "$work"' EXIT

start() { # $1: stack file
  tmux -L "$sock" kill-server 2>/dev/null || true
  rm -rf "$work/stack" && mkdir -p "$work/stack"
  cp "$1" "$work/stack/stack.toml"
  tmux -L "$sock" new-session -d -s s -x 132 -y 36 \
    "cd $work/stack && TERM=xterm-256color $bin stack.toml"
}
keys() { tmux -L "$sock" send-keys -t s "$@"; }
shoot() { # $1: name
  tmux -L "$sock" capture-pane -e -p -t s > "$work/$1.ansi"
  aha --black --title "switchboard" < "$work/$1.ansi" > "$work/$1.html"
  # A monospace font that has the box-drawing and block glyphs.
  sed -i 's|<pre>|<pre style="font-family: DejaVu Sans Mono, monospace; font-size: 14px; line-height: 1.15; margin: 8px;">|' "$work/$1.html"
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chrome" --hide-scrollbars --window-size=1150,680 \
    --screenshot="$out/$1.png" "file://$work/$1.html" >/dev/null 2>&1
  echo "screenshots/$1.png"
}

start scripts/screenshot-stack.toml
sleep 8
# order: its orders moving through their stages as progress bars.
keys j
sleep 1.5
shoot main

# order's routes and recent calls, as the router traced them.
keys t
sleep 1
shoot calls
keys t

keys Tab / l e d g e r Enter n
sleep 0.5
shoot log-search
keys Escape Tab

keys '?'
sleep 0.5
shoot help
keys Escape

# billing (last) has given up by now: select it to show the failure and the alert.
keys G
sleep 0.5
shoot failed-service

# report, the Python job: run it with its default parameters.
keys k Enter Enter
sleep 3
shoot job-progress
keys q y
sleep 3
