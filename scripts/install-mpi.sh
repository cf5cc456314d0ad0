#!/usr/bin/env bash
# What `--features mpi` needs on Debian: Open MPI (mpirun, the library and its headers,
# found through pkg-config or mpicc) and libclang (the `mpi` crate generates its bindings
# with bindgen). Does nothing when they are there.
set -euo pipefail
if command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 \
    && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    exit 0
fi
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    openmpi-bin libopenmpi-dev libclang-dev pkg-config >/dev/null
