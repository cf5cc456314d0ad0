#!/usr/bin/env bash
# Firmware CI: bda-kernel on thumbv7em-none-eabihf (Cortex-M4F), then the firmware under QEMU.
# Runs on a fresh Debian machine with rustup and gcc; exits non-zero if any step fails.
#
#   .ci/firmware.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
    echo "::: $*"
    "$@"
}

target=thumbv7em-none-eabihf

# --- toolchain and system packages
step rustup target add "$target"
if command -v qemu-system-arm >/dev/null && command -v arm-none-eabi-size >/dev/null; then
    echo "::: qemu-system-arm and arm-none-eabi-size already installed"
else
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    # -nographic needs none of qemu's GUI recommends.
    step $sudo apt-get update -qq
    step $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        qemu-system-arm binutils-arm-none-eabi >/dev/null
fi

# --- bda-kernel for the thumb target (from the host workspace)
step cargo build -p bda-kernel --target "$target"
step cargo build -p bda-kernel --target "$target" --features micromath
# defmt log calls do not link on the host: check only, for the target.
step cargo check -p bda-kernel --target "$target" --features defmt

# --- firmware under QEMU (its own workspace: firmware/.cargo/config.toml sets the target)
step firmware/run-qemu.sh
step firmware/run-qemu.sh --features micromath
step firmware/size.sh
step firmware/size.sh --no-default-features

echo "::: firmware CI passed"
