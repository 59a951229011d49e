#!/usr/bin/env bash
# The GPU checks of issues 3-6 in ONE device call (the device budget is 15 minutes a session,
# machine start included): GPU tests, pipeline / training benchmarks, a profile. Outputs under
# $OUT (logs, JSON, the profile's Markdown) for docs/benchmarks.md and docs/profiles/.
#
# Prepare here, in the repo root (no device time):
#   ../shared/tools/device-dali.sh prepare                 # DALI + webdataset + lmdb -> .devwheels/p0..pN
#   mkdir -p .data && echo /.data/ >> .git/info/exclude
#   cp ../shared/datasets/tiny-imagenet-a/train-00.tar.gz .data/     # 34 MB: half the train split
# Then device calls back to back (the machine stays warm ~30 s between calls):
#   run carry [".devwheels/p0"] command "true"             # one call per wheel part ...
#   run carry [".data"]         command "true"
#   run carry [".devwheels/pN"] command "bash tools/bench/gpu_session.sh" timeout_s 540
# Locally (CPU, a smoke test of this script): DEVICE=cpu QUICK=1 bash tools/bench/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
DEVICE=${DEVICE:-gpu}
QUICK=${QUICK:-0}
root=$(pwd)
if [ "$DEVICE" = gpu ]; then
  bash .devwheels/p0/install.sh || exit 3
  # the repo root is the package `spotart`: expose it under that name, no install needed
  mkdir -p /tmp/pkg && ln -sfn "$root" /tmp/pkg/spotart
  export PYTHONPATH=/tmp/pkg:/tmp/site:${PYTHONPATH:-}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
spot() { python3 -m spotart.tools.cli "$@"; }
archive=${ARCHIVE:-.data/train-00.tar.gz}
shards=/tmp/spotart-shards
[ -f "$archive" ] || { echo "$archive missing: carry .data (see the header)"; exit 2; }
steps=30; batches=40; [ "$QUICK" = 1 ] && { steps=3; batches=4; }

set -x
time spot build-shards "$archive" --out "$shards" -j 8 --no-progress 2>&1 | tee "$OUT/shards.log"
if [ "$DEVICE" = gpu ]; then
  timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest-gpu.log"
fi
timeout 200 python3 tools/bench/pipeline.py --shards "$shards" --device "$DEVICE" --workers 8 --batch 256 \
  --batches "$batches" --json "$OUT/pipeline.json" 2>&1 | tee "$OUT/pipeline.log"
timeout 240 python3 tools/bench/train.py --shards "$shards" --preset 64px --steps "$steps" \
  $([ "$DEVICE" = cpu ] && echo "--device cpu --batch-size 16") --json "$OUT/train.json" 2>&1 | tee "$OUT/train.log"
timeout 150 python3 -m spotart.tools.cli profile --shards "$shards" --task artifacts --preset 64px \
  $([ "$DEVICE" = cpu ] && echo "--set device=cpu --set batch_size=16") --batches "$batches" --rounds 2 \
  --out /tmp/spotart-profile 2>&1 | tee "$OUT/profile.log"
cp /tmp/spotart-profile/report.md "$OUT/profile-64px-artifacts.md" 2>/dev/null
cp /tmp/spotart-profile/report.json "$OUT/profile-64px-artifacts.json" 2>/dev/null
echo "outputs in $OUT"
