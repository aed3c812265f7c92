#!/usr/bin/env bash
# Cross-build the C++ core for Linux arm64 (aarch64) and run its tests under qemu-aarch64.
#
#   scripts/test-arm64.sh [extra ctest args...]     e.g. scripts/test-arm64.sh -R kernels
#
# Needs (Debian/Ubuntu names): g++-aarch64-linux-gnu, qemu-user, cmake. When they are missing
# and the script runs as root with apt-get available, it installs them; otherwise it says what
# to install and exits 1. Builds in build-arm64/ (separate from the host build), with the
# toolchain file scripts/aarch64-toolchain.cmake, which sets CMAKE_CROSSCOMPILING_EMULATOR so
# ctest runs every test case through `qemu-aarch64 -L /usr/aarch64-linux-gnu`.
#
# Environment: BUILD_DIR (default build-arm64), BUILD_TYPE (default Release),
#              JOBS (default nproc), EBRIX_AARCH64_SYSROOT (default /usr/aarch64-linux-gnu).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-arm64}"
BUILD_TYPE="${BUILD_TYPE:-Release}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
SYSROOT="${EBRIX_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}"
TOOLCHAIN="$ROOT/scripts/aarch64-toolchain.cmake"
CXX_CROSS=aarch64-linux-gnu-g++

say() { printf '\n==> %s\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }

# --- prerequisites -----------------------------------------------------------------------
missing_pkgs=()
command -v cmake >/dev/null 2>&1 || missing_pkgs+=(cmake)
command -v "$CXX_CROSS" >/dev/null 2>&1 || missing_pkgs+=(g++-aarch64-linux-gnu)
QEMU="$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)"
[[ -n "$QEMU" ]] || missing_pkgs+=(qemu-user)

if ((${#missing_pkgs[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing_pkgs[*]} with apt-get"
    t0=$SECONDS
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing_pkgs[@]}"
    echo "apt install took $((SECONDS - t0))s"
    QEMU="$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)"
  else
    echo "error: missing ${missing_pkgs[*]}" >&2
    echo "install them, e.g.: sudo apt-get install -y ${missing_pkgs[*]}" >&2
    echo "(on other distros: an aarch64-linux-gnu cross g++ and qemu user-mode emulation)" >&2
    exit 1
  fi
fi
command -v "$CXX_CROSS" >/dev/null 2>&1 || { echo "error: $CXX_CROSS still not found" >&2; exit 1; }
[[ -n "$QEMU" ]] || { echo "error: qemu-aarch64 still not found" >&2; exit 1; }
[[ -d "$SYSROOT/lib" ]] || { echo "error: target runtime not found at $SYSROOT (set EBRIX_AARCH64_SYSROOT)" >&2; exit 1; }

say "toolchain"
echo "cross compiler: $(command -v "$CXX_CROSS") ($("$CXX_CROSS" -dumpfullversion 2>/dev/null || "$CXX_CROSS" -dumpversion))"
echo "emulator:       $QEMU ($("$QEMU" --version | head -n1))"
echo "sysroot (-L):   $SYSROOT"
echo "build dir:      $BUILD_DIR ($BUILD_TYPE)"

# --- configure + build -------------------------------------------------------------------
t_build=$SECONDS
say "configure"
run cmake -S "$ROOT" -B "$BUILD_DIR" \
  -DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" \
  -DEBRIX_AARCH64_SYSROOT="$SYSROOT" \
  -DEBRIX_QEMU_AARCH64="$QEMU" \
  -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
  -DEBRIX_TESTS=ON

say "build ebrix_core_tests"
run cmake --build "$BUILD_DIR" --target ebrix_core_tests -j "$JOBS"

BIN="$BUILD_DIR/ebrix_core_tests"
if command -v file >/dev/null 2>&1; then
  echo "built: $(file -b "$BIN")"
fi
echo "build took $((SECONDS - t_build))s"

# --- run ---------------------------------------------------------------------------------
say "SIMD levels the arm64 core reports under qemu"
# The kernel tests loop over supportedLevels(); print them so it is plain that NEON is tested.
PROBE_SRC="$BUILD_DIR/simd_levels_probe.cpp"
cat >"$PROBE_SRC" <<'CPP'
#include <cstdio>
#include "simd/dispatch.h"
int main() {
  std::printf("supported:");
  for (auto level : ebrix::simd::supportedLevels()) std::printf(" %s", ebrix::simd::levelName(level));
  std::printf("\nbest: %s\n", ebrix::simd::levelName(ebrix::simd::bestLevel()));
  return ebrix::simd::bestLevel() == ebrix::simd::Level::Neon ? 0 : 3;
}
CPP
run "$CXX_CROSS" -std=c++17 -O1 -I"$ROOT/native/core" "$PROBE_SRC" "$BUILD_DIR/libebrix_core.a" \
  -pthread -o "$BUILD_DIR/simd_levels_probe"
run "$QEMU" -L "$SYSROOT" "$BUILD_DIR/simd_levels_probe" || {
  echo "error: NEON is not the best level of the arm64 build" >&2; exit 1; }

say "test cases registered with ctest"
(cd "$BUILD_DIR" && ctest -N | sed -n 's/^ *Test *#[0-9]*: /  /p')

say "ctest (each case runs as: $QEMU -L $SYSROOT $BIN <case>)"
t_test=$SECONDS
set +e
(cd "$BUILD_DIR" && run ctest --output-on-failure -j "$JOBS" "$@")
rc=$?
set -e
echo "ctest took $((SECONDS - t_test))s"

say "whole binary once under qemu (all cases in one process)"
set +e
run "$QEMU" -L "$SYSROOT" "$BIN"
rc2=$?
set -e

if ((rc != 0 || rc2 != 0)); then
  say "arm64 tests FAILED (ctest rc=$rc, binary rc=$rc2)"
  exit 1
fi
say "arm64 tests passed"
