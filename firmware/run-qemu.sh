#!/usr/bin/env bash
# Build the firmware (release) and run it on QEMU's Cortex-M4F board (mps2-an386).
# Prints the program's semihosting output and exits with its status: 0 only if every solve
# converged to x* = 1, y* = (1, 1) within tolerance; 124 on timeout.
#
# Usage: firmware/run-qemu.sh [cargo build args, e.g. --features micromath | --no-default-features]
# Env:   QEMU_TIMEOUT (seconds, default 120)
# Needs: rustup target thumbv7em-none-eabihf, qemu-system-arm. Installs nothing (.ci/firmware.sh does).
set -euo pipefail
cd "$(dirname "$0")"

timeout_s="${QEMU_TIMEOUT:-120}"
elf=target/thumbv7em-none-eabihf/release/bda-firmware

command -v qemu-system-arm >/dev/null || {
    echo "run-qemu.sh: qemu-system-arm not found (Debian: apt-get install qemu-system-arm)" >&2
    exit 127
}

cargo build --release --quiet "$@"

# Same command line as the runner in .cargo/config.toml (`cargo run --release` uses that).
set +e
timeout "$timeout_s" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
    -semihosting-config enable=on,target=native -kernel "$elf" </dev/null
status=$?
set -e
if [ "$status" -eq 124 ]; then
    echo "run-qemu.sh: no exit after ${timeout_s} s (timeout)" >&2
elif [ "$status" -ne 0 ]; then
    echo "run-qemu.sh: firmware exited with status $status" >&2
fi
exit "$status"
