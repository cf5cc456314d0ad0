#!/usr/bin/env bash
# Every test of the project, on a fresh Debian machine with only rustup, gcc and python3:
# installs what the tests need (rustup target, QEMU, ARM binutils), then runs
#   1. the workspace tests (kernel, CPU and GPU backends, host CLI end to end; the GPU
#      crate on stand-in CUDA libraries),
#   2. the GPU crate's tests once more with the stand-in CUDA libraries and the host-compiled
#      kernels built with AddressSanitizer and UndefinedBehaviorSanitizer,
#   3. the CLI built without CUDA (`--no-default-features`): its device tests,
#   4. the kernel's tests with the micromath feature,
#   5. the CLI built with MPI (feature `mpi`, Open MPI installed here): runs under
#      `mpirun -np 1, 2, 3` against one process,
#   6. the firmware under an emulated Cortex-M4 (QEMU) and its flash/RAM/stack figures.
# The README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# bda-gpu's tests compile its CUDA sources as host C++ (and CPU stand-ins of the CUDA
# libraries), so they need a C++ compiler; Debian's gcc package alone has none.
if ! command -v g++ >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi

echo "== workspace tests (release)"
cargo test --workspace --release

echo "== bda-gpu on the stand-in device under ASan + UBSan"
BDA_FAKE_CUDA_SANITIZE=1 cargo test -p bda-gpu --release --tests

echo "== bda (CLI) without CUDA"
cargo test -p bda-host --release --no-default-features --lib device

echo "== bda-kernel with micromath"
cargo test -p bda-kernel --release --features micromath

echo "== bda (CLI) with MPI: mpirun -np 1, 2, 3"
bash scripts/install-mpi.sh
cargo test -p bda-host --release --features mpi --test mpi_cli

echo "== firmware on QEMU (Cortex-M4F)"
bash .ci/firmware.sh
