#!/usr/bin/env bash
# The gateway's load benchmark, with wrk as the load generator (an outside cross-check of the
# built-in client): GET /users/{id} through the gateway to the user service against a bare axum
# handler answering the same JSON, and POST /orders beside the disk's fsync rate, in one run.
#
#   scripts/bench-gateway.sh [--json]
#
# Installs wrk (Debian package) when it is missing, builds the release binary, then runs
# `switchboard bench --only gateway` once with the built-in client and once with wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk </dev/null
fi
cargo build --release --quiet
bin=target/release/switchboard
echo "== built-in client" >&2
"$bin" bench --only gateway "$@"
echo "== wrk" >&2
"$bin" bench --only gateway --http-load wrk "$@"
