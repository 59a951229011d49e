#!/usr/bin/env bash
# Bring NVIDIA DALI (CUDA 13 build), the project's other missing packages and the benchmark data
# to the GPU device machine, which has no package registry and takes at most 64 MiB per call
# (the working tree and the carried paths together).
#
#   tools/device/device-dali.sh prepare [DATA_FILE ...]     # here, in the checkout the device tool sends
#
# makes .devwheels/p0 .. pN, each at most PART_MB MiB (default 60):
#   p0        install.sh; the small wheels a shard build needs (lmdb, webdataset, braceexpand); the
#             DATA_FILEs as they are (p0/data/); the first piece of site.tar.xz
#   p1 .. pN  the other pieces of site.tar.xz: DALI and its libraries installed for Python 3.12,
#             without the other Pythons' extension modules and the C headers, xz-compressed
# Then one device call per part, back to back (an idle machine goes back after ~30 s, and the
# parts it holds with it):
#   run carry [".devwheels/p0"] command "bash .devwheels/p0/install.sh pre && ..."   # data + small wheels usable
#   run carry [".devwheels/p1"] command "true"
#   ...
#   run carry [".devwheels/pN"] command "bash .devwheels/p0/install.sh && export PYTHONPATH=/tmp/site:\$PYTHONPATH && ..."
# install.sh checks every piece (sha256), says which part is missing (a fresh machine needs all
# again) and does nothing twice: a second call on the same machine returns at once.
#
# Fixed copy of ../shared/tools/device-dali.sh (read-only there). Changed: it refused to run in a
# git worktree (`[ -d .git ]`; .git is a file there) and wrote to .git/info/exclude, which a
# worktree does not have; it carried the wheels as downloaded (~270 MB: five 58 MB parts, and the
# 34 MB training archive needed a sixth call), now ~185 MB of pruned, xz-compressed install that
# leaves room for the data in the same four calls; its install.sh unpacked every wheel with pip
# at every call; the part order relied on a one-digit glob.
set -euo pipefail
PART_MB=${PART_MB:-60}
EXTRA=${EXTRA:-"webdataset lmdb"}
DALI=${DALI:-"nvidia-dali-cuda130==2.4.0"}
XZ_LEVEL=${XZ_LEVEL:-6}
# packages the device image already has (KINDS.md): never carry a second version of them
SKIP='^(numpy|six|packaging|wheel|typing_extensions|pyyaml|PyYAML|click|numba|llvmlite|torch|pillow)-'
# the small wheels a shard build needs before the big install has arrived
SMALL='^(lmdb|webdataset|braceexpand)-'
PLAT="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

cmd=${1:-}
[ "$cmd" = prepare ] || { sed -n '2,26p' "$0"; exit 2; }
shift
root=$(git rev-parse --show-toplevel 2>/dev/null) || { echo "run this inside the project's git checkout" >&2; exit 2; }
cd "$root"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.devwheels/' "$exclude" 2>/dev/null || echo '/.devwheels/' >> "$exclude"
for f in "$@"; do [ -f "$f" ] || { echo "$f: no such data file" >&2; exit 2; }; done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf .devwheels && mkdir -p .devwheels/p0/wheels .devwheels/p0/data
echo "downloading $DALI $EXTRA for Python 3.12 ..."
# shellcheck disable=SC2086
python3 -m pip download -q --only-binary=:all: $PLAT -d "$tmp/dl" $DALI $EXTRA
keep=$(cd "$tmp/dl" && ls *.whl | grep -Ev "$SKIP")
for w in $keep; do echo "$w" | grep -Eq "$SMALL" && cp "$tmp/dl/$w" .devwheels/p0/wheels/; done
echo "installing for Python 3.12 into a staging folder ..."
# shellcheck disable=SC2086
python3 -m pip install -q --no-deps --no-compile --no-index --only-binary=:all: $PLAT --target "$tmp/site" \
  $(for w in $keep; do echo "$tmp/dl/$w"; done)
# the device runs CPython 3.12: other versions' extension modules and C headers are dead weight
find "$tmp/site" -name '*.cpython-3*-*.so' ! -name '*.cpython-312-*' -delete
find "$tmp/site" -type d \( -name include -o -name __pycache__ \) -prune -exec rm -rf {} +
echo "compressing $(du -sm "$tmp/site" | cut -f1) MB (xz -$XZ_LEVEL; a few minutes) ..."
tar -C "$tmp/site" -cf - . | xz -T2 "-$XZ_LEVEL" > "$tmp/site.tar.xz"
if [ $# -gt 0 ]; then cp "$@" .devwheels/p0/data/; fi

python3 - "$tmp/site.tar.xz" "$PART_MB" <<'PY'
"""Split site.tar.xz into pieces: p0 gets what room its other files leave, the rest PART_MB each."""
import hashlib, os, sys
src, part = sys.argv[1], int(sys.argv[2]) << 20
used = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(".devwheels/p0") for f in fs)
room = part - used - (256 << 10)  # install.sh and checksums
if room < (1 << 20):
    sys.exit(f"p0 has no room left for a piece of the install ({used >> 20} MiB of data and wheels; "
             f"PART_MB is {part >> 20}): carry less data")
digest = hashlib.sha256()
with open(src, "rb") as f:
    k, size = 0, room
    while chunk := f.read(size):
        digest.update(chunk)
        os.makedirs(f".devwheels/p{k}", exist_ok=True)
        with open(f".devwheels/p{k}/piece.{k}", "wb") as out:
            out.write(chunk)
        k, size = k + 1, part
with open(".devwheels/p0/site.sha256", "w") as out:
    out.write(f"{digest.hexdigest()} {k}\n")
PY
read -r sha n < .devwheels/p0/site.sha256
cat > .devwheels/p0/install.sh <<INSTALL
#!/usr/bin/env bash
# Runs on the device, in the repo root. "pre": the small wheels into /tmp/site (a shard build can
# run). Default: also join the $n pieces of site.tar.xz, check them, and unpack DALI into /tmp/site.
# Each step is done once per machine. Then: export PYTHONPATH=/tmp/site:\$PYTHONPATH
set -euo pipefail
mode=\${1:-full}
site=/tmp/site
mkdir -p "\$site"
if [ ! -f "\$site/.small-$sha" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "\$site" .devwheels/p0/wheels/*.whl
  touch "\$site/.small-$sha"
fi
[ "\$mode" = pre ] && { echo "small wheels in \$site; data in .devwheels/p0/data"; exit 0; }
if [ ! -f "\$site/.site-$sha" ]; then
  missing=0
  for i in \$(seq 0 $((n - 1))); do
    [ -f .devwheels/p\$i/piece.\$i ] || { echo "missing part p\$i: carry .devwheels/p\$i again" >&2; missing=1; }
  done
  [ \$missing = 0 ] || exit 3
  got=\$(for i in \$(seq 0 $((n - 1))); do cat .devwheels/p\$i/piece.\$i; done | tee /tmp/site.tar.xz | sha256sum | cut -d' ' -f1)
  [ "\$got" = "$sha" ] || { echo "the parts do not match (prepare again, carry all)" >&2; exit 4; }
  python3 -c "import tarfile; tarfile.open('/tmp/site.tar.xz').extractall('\$site', filter='fully_trusted')"
  rm -f /tmp/site.tar.xz
  touch "\$site/.site-$sha"
fi
echo "installed into \$site: export PYTHONPATH=\$site:\\\${PYTHONPATH:-}"
INSTALL
chmod +x .devwheels/p0/install.sh
echo "prepared $n parts (PART_MB $PART_MB; the working tree travels too, keep it under $((64 - PART_MB)) MiB):"
du -sm .devwheels/p* | sed 's/^/  MiB /'
echo "device calls: carry .devwheels/p0 .. .devwheels/p$((n - 1)), one per call, back to back"
