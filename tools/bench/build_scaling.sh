#!/usr/bin/env bash
# How `spotart build-shards` scales with cores: -j 1, 2, 4, 8, 16 on the given archive(s), each
# the median of REPEAT interleaved rounds, as img/s with ratios to -j 1 and to a single-process
# webdataset.ShardWriter loop measured in the same run; plus main-process vs worker CPU time and
# the seconds per stage (list, convert, survey, write) of every -j.
#
#   bash tools/bench/build_scaling.sh .data/train-00.tar.gz [more archives]
#
# Meant for the 16-core GPU host (tools/bench/gpu_session.sh calls it after its setup, so that
# `spotart` is importable); runs anywhere. Env: JOBS ("1 2 4 8 16"), REPEAT (3), BASELINE (1; 0
# skips the webdataset loop), PYTHON (python3), OUT (folder for build_scaling.json and .log),
# MAX_COUNT (2000 samples per shard: shards are the write stage's unit of parallelism, and a
# 25 k-image archive at the default 10,000 gives 3 of them where ImageNet gives 128).
set -uo pipefail
[ "$#" -ge 1 ] || { echo "usage: $0 ARCHIVE [ARCHIVE...]" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
here=$(cd "$(dirname "$0")" && pwd)
extra=()
[ "${BASELINE:-1}" = 0 ] && extra+=(--no-baseline)
# shellcheck disable=SC2086  # JOBS is a list of numbers
"${PYTHON:-python3}" "$here/build_shards.py" --data "" --archives "$@" --jobs ${JOBS:-1 2 4 8 16} \
  --repeat "${REPEAT:-3}" --max-count "${MAX_COUNT:-2000}" --json "$OUT/build_scaling.json" ${extra[@]+"${extra[@]}"} 2>&1 | tee "$OUT/build_scaling.log"
exit "${PIPESTATUS[0]}"
