#!/usr/bin/env bash
# Fuzzes capture's payload decoder (cargo fuzz target `decode_payload` in capture/fuzz) for a
# bounded time: every body encoding, Content-Type, Content-Encoding and query parameter that
# steers decoding, through the handler's whole decode+validate path. Not run in CI.
#
#   scripts/fuzz.sh [seconds]        # default 300
#
# Exits non-zero when the fuzzer finds a crash (a panic, a broken invariant, a timeout or an
# out-of-memory input) and prints the artifact to reproduce it with. Seeds come from
# capture/fuzz/corpus (committed, only read); what the fuzzer learns is kept in
# capture/fuzz/corpus-local between runs; capture/fuzz/decode_payload.dict guides mutations.
#
# Runs on the stable toolchain. By default without a sanitizer: cargo-fuzz then passes only
# stable rustc flags (SanitizerCoverage via -Cpasses/-Cllvm-args), and capture is safe Rust.
# FUZZ_SANITIZER=address builds with AddressSanitizer, whose -Zsanitizer flag stable rustc only
# accepts with RUSTC_BOOTSTRAP=1 (set here for that build only); it runs ~4x slower.
# Builds go to capture/fuzz/target (ASan: capture/fuzz/target/asan), never to the workspace's
# target/.
#
# Environment: FUZZ_SANITIZER (none or address, default none), FUZZ_MAX_LEN (largest input,
# default 16384), FUZZ_ARGS (more libFuzzer flags, e.g. "-fork=2" or "-seed=1").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

seconds="${1:-300}"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "usage: scripts/fuzz.sh [seconds]  (got '$seconds')"

target=decode_payload
cd "$HOGSTREAM_ROOT/capture"
seeds="fuzz/corpus/$target"          # committed seeds, only read
corpus="fuzz/corpus-local/$target"   # what the fuzzer learns; gitignored, kept between runs
artifacts="fuzz/artifacts/$target"   # crash-*, timeout-*, oom-*; gitignored
run_log="fuzz/target/fuzz-$target.log"
mkdir -p "$corpus" "$artifacts" fuzz/target

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

sanitizer="${FUZZ_SANITIZER:-none}"
case "$sanitizer" in
    none)
        fuzz_flags=(--sanitizer none)
        rss_limit_mb=1024
        ;;
    address)
        export RUSTC_BOOTSTRAP=1
        # Its own target dir: switching RUSTFLAGS or RUSTC_BOOTSTRAP rebuilds every crate.
        fuzz_flags=(--sanitizer address --target-dir fuzz/target/asan)
        rss_limit_mb=2048 # ASan's quarantine and shadow memory
        ;;
    *) die "FUZZ_SANITIZER must be none or address (got '$sanitizer')" ;;
esac

log "building the fuzz target (first build takes several minutes)"
cargo fuzz build "${fuzz_flags[@]}" "$target"

stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT
log "fuzzing $target for ${seconds}s, sanitizer $sanitizer (log: capture/$run_log)"
set +e
# shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
cargo fuzz run "${fuzz_flags[@]}" "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb="$rss_limit_mb" \
    -max_len="${FUZZ_MAX_LEN:-16384}" -dict="fuzz/$target.dict" -print_final_stats=1 \
    ${FUZZ_ARGS:-} \
    2>&1 | tee "$run_log"
status="${PIPESTATUS[0]}"
set -e

found="$(find "$artifacts" -type f -newer "$stamp" | sort)"
# The last status line, e.g. "#123456 DONE cov: 2345 ft: 6789 corp: 321/45Kb exec/s: 1234 rss: 99Mb".
summary="$(grep -E '^#[0-9]+' "$run_log" | tail -n 1 || true)"
execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$run_log" | tail -n 1)"
rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$run_log" | tail -n 1)"
log "last status: ${summary:-none}"
log "executions: ${execs:-?}, average ${rate:-?}/s, corpus: $(find "$corpus" -type f | wc -l) inputs"

if [[ "$status" -ne 0 || -n "$found" ]]; then
    for artifact in $found; do
        log "artifact: capture/$artifact"
        log "reproduce: cd capture && ${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1 }cargo fuzz run ${fuzz_flags[*]} $target $artifact"
    done
    die "the fuzzer found a problem (exit status $status); see capture/$run_log"
fi
log "no crash found"
