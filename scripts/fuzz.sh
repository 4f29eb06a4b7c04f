#!/bin/bash
# Runs the libFuzzer target build-fuzz/bin/skyhook_fuzz_scan (`scripts/setup.sh fuzz`)
# for SECONDS in each of its two modes (cls_plugins/skyhook/fuzz_scan.cc):
#   request mode: mutated ScanRequests over the seed partitions (benchmarks/malformed.py)
#   object mode:  mutated partitions under the seed requests
# Seeds and the growing corpus live in build-fuzz/corpus/, crashes in build-fuzz/findings/.
#
#   scripts/fuzz.sh [SECONDS]      (default 300 per mode; `make fuzz FUZZ_SECONDS=600`)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_MODE=${1:-300}
FUZZER=build-fuzz/bin/skyhook_fuzz_scan
[ -x "$FUZZER" ] || { echo "no $FUZZER: run scripts/setup.sh fuzz" >&2; exit 2; }
SEEDS=build-fuzz/seeds
mkdir -p build-fuzz/corpus/request build-fuzz/corpus/object build-fuzz/findings
.venv/bin/python -m benchmarks.fuzz_seeds "$SEEDS"
objects=$(ls "$SEEDS"/objects/* | tr '\n' ':')
requests=$(ls "$SEEDS"/requests/* | tr '\n' ':')
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
for mode in request object; do
    echo "[fuzz] $mode mode for ${SECONDS_PER_MODE}s" >&2
    rc=0
    SKYHOOK_FUZZ_MODE=$mode SKYHOOK_FUZZ_OBJECTS=$objects SKYHOOK_FUZZ_REQUESTS=$requests \
        "$FUZZER" -max_total_time="$SECONDS_PER_MODE" -timeout=20 -rss_limit_mb=2048 \
        -max_len=$([ $mode = request ] && echo 8192 || echo 300000) \
        -artifact_prefix=build-fuzz/findings/$mode- -print_final_stats=1 \
        build-fuzz/corpus/$mode "$SEEDS/$mode" > build-fuzz/$mode.log 2>&1 || rc=$?
    grep -E "^stat::|^Done|ERROR|SUMMARY" build-fuzz/$mode.log | sed "s/^/[fuzz $mode] /" >&2 || true
    [ $rc -eq 0 ] || status=$rc
done
ls build-fuzz/findings/ | sed 's/^/[fuzz] finding: /' >&2
exit $status
