#!/bin/sh
# Builds the static release binary for a target (default: the host's).
#   packaging/build-static.sh [TARGET]     e.g. aarch64-unknown-linux-gnu
# Static glibc (+crt-static, see .cargo/config.toml), LTO, opt-level "s", stripped.
# The static libseccomp, libelf and zlib of that target must be installed
# (Debian: libseccomp-dev, libelf-dev, zlib1g-dev for the target architecture).
set -eu
cd "$(dirname "$0")/.."
TARGET="${1:-$(rustc -vV | sed -n 's/^host: //p')}"
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/$(echo "$TARGET" | sed 's/-unknown//')}"
cargo build --release --locked --target "$TARGET" -p shoal
OUT="${CARGO_TARGET_DIR:-target}/$TARGET/release/shoal"
ls -l "$OUT"
file "$OUT" 2>/dev/null || true
