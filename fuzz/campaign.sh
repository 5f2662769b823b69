#!/usr/bin/env bash
# A fuzzing campaign over every target (or the ones named), two at a time (one per core).
#
#   fuzz/campaign.sh [TARGET...]
#
# Each target runs until RUNS executions, or SLOW_SECONDS of CPU time for a target too slow to
# reach them (below ~8k executions/s at the defaults). The budget is CPU time, not wall time:
# libFuzzer runs in chunks of at most CHUNK_SECONDS, and the CPU seconds each chunk got are
# summed, so a busy machine (or a paused campaign) makes the run longer, not smaller. It starts
# from the committed corpus
# (fuzz/corpus/T) and the seeds (fuzz/seeds/T), with fuzz/dict/T.dict when there is one. Then
# the corpus is merged and minimised (libFuzzer -merge=1), inputs over MAX_INPUT bytes are
# dropped, and the result replaces fuzz/corpus/T (commit it: CI's smoke run starts from it).
# With COVERAGE=1 (the default) each target's corpus is then replayed by `cargo fuzz coverage`
# and llvm-cov summarises the lines and regions covered in the crate under test.
#
# Settings (environment):
#   RUNS=10000000        executions per target
#   SLOW_SECONDS=1200    the cap for a slow target (20 CPU-minutes)
#   CHUNK_SECONDS=300    wall seconds one libFuzzer run may take before the budget is re-counted
#   JOBS=2               targets at once (one process each)
#   SANITIZER=none       none | address (the code under test is forbid(unsafe_code); CI's smoke
#                        run replays the committed corpus under AddressSanitizer)
#   MAX_INPUT=4096       inputs kept in the committed corpus are at most this many bytes
#   MAX_CORPUS=1048576   bytes a committed corpus may hold: the largest inputs go first (their
#                        count is printed), so the repository stays small
#   COVERAGE=1           0 to skip the coverage pass
#   LLVM_COV, LLVM_PROFDATA  the LLVM tools matching nightly's LLVM (default: llvm-22's, else
#                        nightly's llvm-tools component)
#   OUT=fuzz/campaign-out  logs, the working corpora and results.tsv
#
# Prints one Markdown table row per target (also in $OUT/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10000000}
SLOW_SECONDS=${SLOW_SECONDS:-1200}
CHUNK_SECONDS=${CHUNK_SECONDS:-300}
JOBS=${JOBS:-2}
SANITIZER=${SANITIZER:-none}
MAX_INPUT=${MAX_INPUT:-4096}
MAX_CORPUS=${MAX_CORPUS:-1048576}
COVERAGE=${COVERAGE:-1}
OUT=${OUT:-fuzz/campaign-out}
# Debian's llvm-22, else nightly's own llvm-tools component (`rustup component add llvm-tools
# --toolchain nightly`), which always matches its LLVM.
rustup_llvm="$(rustc +nightly --print sysroot 2>/dev/null)/lib/rustlib/$(rustc +nightly -vV 2>/dev/null | sed -n 's/^host: //p')/bin"
llvm_tool() {
  command -v "$1-22" || { [ -x "$rustup_llvm/$1" ] && echo "$rustup_llvm/$1"; } || echo "/usr/lib/llvm-22/bin/$1"
}
LLVM_COV=${LLVM_COV:-$(llvm_tool llvm-cov)}
LLVM_PROFDATA=${LLVM_PROFDATA:-$(llvm_tool llvm-profdata)}
# The campaign builds in its own target directory, so it never rebuilds CI's ASan binaries.
TARGET_DIR=fuzz/target-campaign
FLAGS=(--fuzz-dir fuzz -O -a -s "$SANITIZER" --target-dir "$TARGET_DIR")

if [ $# -gt 0 ]; then targets="$*"; else targets=$(cargo +nightly fuzz list --fuzz-dir fuzz); fi
mkdir -p "$OUT"
cargo +nightly fuzz build "${FLAGS[@]}"

# The crate a target exercises: coverage is reported over that crate's sources.
crate_of() {
  local c
  c=$(grep -o 'credvault_[a-z]*' "fuzz/fuzz_targets/$1.rs" | head -n1)
  echo "crates/${c//_/-}/src"
}

# Drops a corpus's largest inputs until it holds at most MAX_CORPUS bytes.
bound_corpus() {
  local dir=$1 dropped
  dropped=$(find "$dir" -type f -printf '%s %p\n' | sort -n |
    awk -v cap="$MAX_CORPUS" '{t += $1; if (t > cap) print $2}' | tee "$dir.drop" | wc -l)
  xargs -r rm -f <"$dir.drop"
  rm -f "$dir.drop"
  [ "$dropped" -eq 0 ] || echo "$(basename "$dir"): dropped the $dropped largest inputs (corpus bound $MAX_CORPUS bytes)"
}

run_one() {
  local t=$1 log="$OUT/$1.log" work="$OUT/corpus/$1" min="$OUT/min/$1"
  local dict=() start end
  rm -rf "$work" "$min"
  mkdir -p "$work" "$min" "fuzz/corpus/$t" "fuzz/seeds/$t"
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  start=$(date +%s)
  # CPU seconds (user + system) of each chunk: under load they are fewer than its wall seconds,
  # which -max_total_time bounds, so chunks run until the CPU budget or RUNS is spent.
  local TIMEFORMAT='%U %S' chunk=0 cpu_used=0 done_execs=0 left runs_left n
  : >"$log"
  while :; do
    left=$((SLOW_SECONDS - cpu_used))
    runs_left=$((RUNS - done_execs))
    [ "$left" -gt 0 ] && [ "$runs_left" -gt 0 ] || break
    if ! { time cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$work" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -runs="$runs_left" -max_total_time="$((left < CHUNK_SECONDS ? left : CHUNK_SECONDS))" \
        -print_final_stats=1 "${dict[@]}" >"$log.chunk" 2>&1; } 2>"$OUT/$t.cpu.chunk"; then
      cat "$log.chunk" >>"$log"
      echo "$t: CRASH (input under fuzz/artifacts/$t; log $log)" >&2
      tail -n 40 "$log.chunk" >&2
      echo "$t" >>"$OUT/crashed"
      return 0
    fi
    cat "$log.chunk" >>"$log"
    n=$(grep -E '^stat::number_of_executed_units' "$log.chunk" | awk '{print $2}')
    done_execs=$((done_execs + ${n:-0}))
    # Rounded up, so a chunk always counts at least one second and the loop ends.
    cpu_used=$((cpu_used + $(awk '{printf "%d", $1 + $2 + 0.999}' "$OUT/$t.cpu.chunk")))
    chunk=$((chunk + 1))
  done
  rm -f "$log.chunk" "$OUT/$t.cpu.chunk"
  echo "$cpu_used $done_execs $chunk" >"$OUT/$t.cpu"
  end=$(date +%s)
  # Merge the new inputs with the committed corpus and the seeds into a minimal set.
  cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$min" "$work" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -merge=1 -max_len="$MAX_INPUT" >"$OUT/$t.merge.log" 2>&1
  find "$min" -type f -size +"$MAX_INPUT"c -delete
  bound_corpus "$min"
  rm -rf "fuzz/corpus/$t"
  mv "$min" "fuzz/corpus/$t"
  local execs secs cpu cov ft files bytes
  cpu=$cpu_used
  execs=$done_execs
  secs=$((end - start))
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n1 | awk '{print $2}')
  ft=$(grep -Eo 'ft: [0-9]+' "$log" | tail -n1 | awk '{print $2}')
  files=$(find "fuzz/corpus/$t" -type f | wc -l)
  bytes=$(du -sb "fuzz/corpus/$t" | awk '{print $1}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$execs" "$secs" "$cpu" \
    "$((execs / (cpu > 0 ? cpu : 1)))" "$cov" "$ft" "$files" "$bytes" >"$OUT/$t.tsv"
  echo "$t: $execs executions in ${secs}s (${cpu} CPU-s), cov $cov, ft $ft, corpus $files files / $bytes bytes"
}

rm -f "$OUT/crashed"
running=0
for t in $targets; do
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
  run_one "$t" &
  running=$((running + 1))
done
wait

if [ "$COVERAGE" = 1 ]; then
  for t in $targets; do
    [ -f "$OUT/$t.tsv" ] || continue
    # cargo-fuzz merges the raw profiles with rustup's llvm-tools component when it is
    # installed; otherwise it stops after the replay and the merge is done here.
    rm -rf "fuzz/coverage/$t"
    cargo +nightly fuzz coverage --fuzz-dir fuzz -O --target-dir fuzz/target-coverage "$t" "fuzz/corpus/$t" >"$OUT/$t.cov.log" 2>&1 ||
      "$LLVM_PROFDATA" merge -sparse "fuzz/coverage/$t/raw" -o "fuzz/coverage/$t/coverage.profdata"
    bin=$(find fuzz/target-coverage -type f -path "*/release/$t" | head -n1)
    src=$(crate_of "$t")
    # Columns: file, regions, missed, cover%, functions, missed, executed%, lines, missed,
    # cover%. Reported twice: over the whole crate, and over the files the target reached
    # (at least one region executed), which is the code it is meant to exercise.
    "$LLVM_COV" report "$bin" -instr-profile="fuzz/coverage/$t/coverage.profdata" "$src" \
      | awk -v t="$t" -v s="$src" '
          $1 ~ /\.rs$/ && $2 > $3 { r += $2; rm += $3; l += $8; lm += $9; n++ }
          /^TOTAL/ { tr = $4; tl = $10 }
          END { printf "%s\t%s\t%s\t%s\t%d\t%.1f%%\t%.1f%%\n", t, s, tr, tl, n,
                       r ? 100 * (r - rm) / r : 0, l ? 100 * (l - lm) / l : 0 }' >"$OUT/$t.cov.tsv"
    cat "$OUT/$t.cov.tsv"
  done
fi

{
  echo "| target | executions | wall s | CPU s | exec/CPU-s | cov | ft | corpus files | corpus bytes | crate | crate regions | crate lines | files reached | their regions | their lines |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
  for t in $targets; do
    [ -f "$OUT/$t.tsv" ] || { echo "| \`$t\` | crashed: see $OUT/$t.log |"; continue; }
    IFS=$'\t' read -r _ execs secs cpu rate cov ft files bytes <"$OUT/$t.tsv"
    crate="-" regions="-" lines="-" reached="-" rregions="-" rlines="-"
    if [ -f "$OUT/$t.cov.tsv" ]; then
      IFS=$'\t' read -r _ crate regions lines reached rregions rlines <"$OUT/$t.cov.tsv"
    fi
    crate=${crate#crates/}
    echo "| \`$t\` | $execs | $secs | $cpu | $rate | $cov | $ft | $files | $bytes | ${crate%/src} | $regions | $lines | $reached | $rregions | $rlines |"
  done
} | tee "$OUT/results.md"
if [ -f "$OUT/crashed" ]; then
  echo "crashed: $(tr '\n' ' ' <"$OUT/crashed")" >&2
  exit 1
fi
