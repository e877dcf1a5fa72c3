#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after the other, each on one core,
# starting from its committed corpus and adding what it finds there:
#
#   protocol/fuzz: decode_frames, envelope, segment_reader   corpus in protocol/fuzz/corpus/TARGET
#   fuzz:          stack_file, gateway_json                  corpus in fuzz/corpus/TARGET
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`). Built with debug assertions (`-a`),
# so an arithmetic overflow is a crash, as it is in the console's debug builds. A crash stops the
# script; its input is in the fuzz directory's artifacts/TARGET/. To shrink a corpus afterwards:
#   (cd protocol && cargo +nightly fuzz cmin -a TARGET fuzz/corpus/TARGET)
set -euo pipefail

seconds="${1:-600}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"

declare -A crate_of=(
    [decode_frames]=protocol
    [envelope]=protocol
    [segment_reader]=protocol
    [stack_file]=.
    [gateway_json]=.
)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(decode_frames envelope segment_reader stack_file gateway_json)
fi

for target in "${targets[@]}"; do
    crate="${crate_of[$target]:?unknown target $target}"
    corpus="$root/$crate/fuzz/corpus/$target"
    mkdir -p "$corpus"
    echo "== $target: ${seconds}s from $(find "$corpus" -type f | wc -l) corpus inputs" >&2
    (
        cd "$root/$crate"
        cargo +nightly fuzz run -a "$target" "fuzz/corpus/$target" -- \
            -max_total_time="$seconds" -print_final_stats=1
    )
done
