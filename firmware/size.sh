#!/usr/bin/env bash
# Flash and static RAM of the release firmware (arm-none-eabi-size) and its stack
# high-water mark (measured by stack painting during a QEMU run, see src/stack.rs).
#
# Usage: firmware/size.sh [cargo build args, e.g. --no-default-features for the f32-only program]
# Needs: arm-none-eabi-size (Debian binutils-arm-none-eabi), plus what run-qemu.sh needs.
set -euo pipefail
cd "$(dirname "$0")"

elf=target/thumbv7em-none-eabihf/release/bda-firmware

command -v arm-none-eabi-size >/dev/null || {
    echo "size.sh: arm-none-eabi-size not found (Debian: apt-get install binutils-arm-none-eabi)" >&2
    exit 127
}

cargo build --release --quiet "$@"

echo "== arm-none-eabi-size ($*)"
arm-none-eabi-size "$elf"
# Flash: everything loaded from flash (vector table, code, read-only data, .data's initial
# values). RAM: statics (.data, .bss, .uninit); the stack comes on top.
arm-none-eabi-size -A "$elf" | awk '
    $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" || $1 == ".gnu.sgstubs" { flash += $2 }
    $1 == ".data" { flash += $2; ram += $2 }
    $1 == ".bss" || $1 == ".uninit" { ram += $2 }
    END {
        printf "flash: %d bytes\n", flash
        printf "RAM (static): %d bytes\n", ram
    }'

log=$(./run-qemu.sh "$@") || { echo "$log"; echo "size.sh: the QEMU run failed" >&2; exit 1; }
grep -E '^stack' <<<"$log"
