#!/usr/bin/env bash
# Configures and builds Gemmapod into build/ (Release, Ninja, two jobs). Re-running rebuilds only
# what changed; ccache keeps compiled objects outside the repository (~/.cache/ccache) between
# clean clones.
#   BUILD_DIR=dir   build somewhere else          CMAKE_ARGS="..."   extra configure flags
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j2
