#!/usr/bin/env bash
# `switchboard bench --check` as CI runs it: the workspace's crates at opt-level 3 over the
# test build's dependencies (opt-level 1, already built by `cargo test`), so the check costs
# one compile of the workspace (~1-2 min on two cores) instead of a release build from
# scratch (~7.5 min). It overwrites target/debug/switchboard: run it after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
opt3=()
for crate in switchboard switchboard-protocol switchboard-services; do
  opt3+=(--config "profile.dev.package.${crate}.opt-level=3")
done
cargo build --quiet "${opt3[@]}" -p switchboard --bin switchboard
exec target/debug/switchboard bench --check "$@"
