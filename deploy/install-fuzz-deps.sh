#!/usr/bin/env bash
# Installs what `deploy/fuzz.sh` needs beyond the pinned stable toolchain: a nightly toolchain
# (libFuzzer's sanitizer coverage needs `-Z` flags) and `cargo-fuzz`.
#
# Idempotent: each piece is checked first and only installed when missing, so a second run
# changes nothing and needs no network. Not part of `deploy/test.sh`: the property tests in the
# workspace run on stable; fuzzing is done on purpose.
set -euo pipefail

log() { printf 'install-fuzz-deps: %s\n' "$*"; }

if ! command -v rustup >/dev/null 2>&1; then
    log "rustup is required (the toolchain is managed by rust-toolchain.toml)" >&2
    exit 1
fi

if rustup toolchain list | grep -q '^nightly'; then
    log "nightly toolchain present"
else
    log "rustup toolchain install nightly --profile minimal"
    rustup toolchain install nightly --profile minimal
fi

# `cargo fuzz` is a cargo subcommand; it is found on PATH or in ~/.cargo/bin.
if command -v cargo-fuzz >/dev/null 2>&1 || [[ -x "$HOME/.cargo/bin/cargo-fuzz" ]]; then
    log "cargo-fuzz present"
else
    log "cargo install cargo-fuzz --locked (a few minutes, once)"
    cargo +nightly install cargo-fuzz --locked
fi
