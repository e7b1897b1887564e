#!/usr/bin/env bash
# Installs the Debian packages anchor/build.py needs to build the on-chain program without
# Solana's platform tools: Debian's rustc-web (its libcore for bpfel-unknown-none comes in
# libstd-rust-web-dev-bpf) and LLVM 22 (llvm-link-22, opt-22, llc-22). Idempotent: does
# nothing when they are installed. Run as root (scripts/setup.sh calls it).
set -euo pipefail

PACKAGES=(rustc-web libstd-rust-web-dev-bpf llvm-22)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "anchor build deps: installed (${PACKAGES[*]})"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "anchor build deps missing: ${missing[*]}; run this script as root" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "anchor build deps missing: ${missing[*]}; no apt-get here (Debian 12 packages)" >&2
    exit 1
fi

echo "anchor build deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
