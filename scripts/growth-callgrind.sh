#!/usr/bin/env bash
# Instructions per routed call in the console, at several numbers of services: does a call
# cost more *work* with more services, or the same work with more cache misses? The counts
# are exact and repeat from run to run, where CPU time on a shared machine does not, and they
# need no hardware counters (which many virtual machines lack).
#
#   scripts/growth-callgrind.sh [SIZE...]        (default: 1 100 500)
#
# Runs `switchboard bench --only growth --size N` under callgrind, for each size, with fewer
# calls (valgrind is ~50x slower): SWITCHBOARD_GROWTH_CALLS (default here 5000, plus a tenth
# of warm-up) and SWITCHBOARD_GROWTH_RUNS (default here 1). Only the console is counted: the
# services run natively, as children valgrind does not follow. The bench marks its windows
# (src/bench/callgrind.rs): each size's idle period and each run is a file of its own in
# $OUT (default target/growth-callgrind). Per run it prints the instructions per call, the
# same with the idle rate of that size taken out (idle work counts per second, and a call
# under valgrind takes longer), and the ratio to the first size. Busy polling is off, as in
# docs/performance.md, so that the counts are routing work.
#
# VALGRIND_ARGS adds valgrind options: with "--cache-sim=yes --LL=1048576,16,64" it also
# prints the simulated cache misses per call of the console alone (I1mr, D1mr/D1mw: level 1;
# ILmr, DLmr/DLmw: here a 1 MiB last level, the size of this machine's per-core L2).
#
# SCOPE=path counts only the per-message tasks (each instance's stdout reader, which
# routes, and its stdin writer; callgrind's --toggle-collect): no periodic work, so the
# figures compare across sizes however long the runs took; the runtime's own share (waking
# and polling those tasks, epoll) is then left out.
#
# REPORT_ONLY=1 prints the table again from the files in $OUT, without running anything.
#
# To see where the instructions go at one size:
#   callgrind_annotate --inclusive=yes $OUT/callgrind.out.*.N  | head -60
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 100 500)
out=${OUT:-target/growth-callgrind}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -n "${REPORT_ONLY:-}" ] || cargo build --release --quiet
mkdir -p "$out"
scope=()
if [ "${SCOPE:-}" = path ]; then
  scope=(--collect-atstart=no
    "--toggle-collect=switchboard::supervisor::stdout::StdoutReader::run::*"
    "--toggle-collect=switchboard::supervisor::instance::write_stdin::*")
fi
for n in "${sizes[@]}"; do
  [ -z "${REPORT_ONLY:-}" ] || break
  rm -f "$out"/callgrind.out.n"$n".*
  SWITCHBOARD_BUSY_POLL=0 \
    SWITCHBOARD_GROWTH_CALLS=${SWITCHBOARD_GROWTH_CALLS:-5000} \
    SWITCHBOARD_GROWTH_RUNS=${SWITCHBOARD_GROWTH_RUNS:-1} \
    valgrind --tool=callgrind --dump-instr=no ${VALGRIND_ARGS:-} "${scope[@]}" --callgrind-out-file="$out/callgrind.out.n$n.%p" \
    target/release/switchboard bench --only growth --size "$n" >"$out/bench.n$n.txt" 2>"$out/valgrind.n$n.txt"
done
# Each window's file names its label (desc: Trigger: Client Request: growth n=N ...), its
# events (Ir, and the cache events with --cache-sim=yes) and their totals (summary:).
#
# Per run: per call, less the idle rate at that size over the run's time (idle work counts
# per second: metrics samples, heartbeat checks; under valgrind a call takes ~50x longer, so
# at 500 services that is a large part, and the subtraction is only as good as the run's
# timing: keep the machine quiet, or use SCOPE=path).
for f in "$out"/callgrind.out.n*; do
  label=$(sed -n 's/^desc: Trigger: Client Request: //p' "$f")
  events=$(sed -n 's/^events: //p' "$f")
  totals=$(sed -n 's/^summary: //p' "$f")
  [ -n "$label" ] && [ -n "$totals" ] || continue
  echo "$label | $events | $totals"
done | awk -F' [|] ' -v sizes="${sizes[*]}" '
  {
    split($1, words, " "); n = substr(words[2], 3); wall = 0; calls = 0
    for (i in words) {
      split(words[i], kv, "=")
      if (kv[1] == "wall_s") wall = kv[2]
      if (kv[1] == "calls") calls = kv[2]
    }
    events = split($2, name, " "); split($3, total, " ")
    if (words[3] == "idle") { for (e = 1; e <= events; e++) idle[n, e] = total[e] / wall; next }
    k = ++runs[n]; c[n, k] = calls; w[n, k] = wall
    for (e = 1; e <= events; e++) sum[n, k, e] = total[e]
  }
  END {
    printf "%5s %6s", "N", "calls"
    for (e = 1; e <= events; e++) printf " %9s", name[e] "/call"
    printf " %8s\n", "Ir ratio"
    count = split(sizes, order, " ")
    for (j = 1; j <= count; j++) {
      n = order[j]
      for (k = 1; k <= runs[n]; k++) {
        printf "%5s %6d", n, c[n, k]
        for (e = 1; e <= events; e++) printf " %9.1f", (sum[n, k, e] - idle[n, e] * w[n, k]) / c[n, k]
        per = (sum[n, k, 1] - idle[n, 1] * w[n, k]) / c[n, k]
        if (base == "") base = per
        printf " %7.2fx\n", per / base
      }
    }
  }'
