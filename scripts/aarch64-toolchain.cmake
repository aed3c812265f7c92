# CMake toolchain file: cross-compile for Linux arm64 (aarch64) with Debian's
# g++-aarch64-linux-gnu, and run the resulting binaries (ctest, try_run) under qemu-aarch64.
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=scripts/aarch64-toolchain.cmake
#
# Overridable from the command line / environment:
#   EBRIX_AARCH64_PREFIX   compiler prefix        (default: aarch64-linux-gnu-)
#   EBRIX_AARCH64_SYSROOT  target runtime root     (default: /usr/aarch64-linux-gnu)
#   EBRIX_QEMU_AARCH64     emulator               (default: qemu-aarch64 on PATH)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT EBRIX_AARCH64_PREFIX)
  if(DEFINED ENV{EBRIX_AARCH64_PREFIX})
    set(EBRIX_AARCH64_PREFIX "$ENV{EBRIX_AARCH64_PREFIX}")
  else()
    set(EBRIX_AARCH64_PREFIX aarch64-linux-gnu-)
  endif()
endif()
if(NOT EBRIX_AARCH64_SYSROOT)
  if(DEFINED ENV{EBRIX_AARCH64_SYSROOT})
    set(EBRIX_AARCH64_SYSROOT "$ENV{EBRIX_AARCH64_SYSROOT}")
  else()
    set(EBRIX_AARCH64_SYSROOT /usr/aarch64-linux-gnu)
  endif()
endif()
if(NOT EBRIX_QEMU_AARCH64)
  if(DEFINED ENV{EBRIX_QEMU_AARCH64})
    set(EBRIX_QEMU_AARCH64 "$ENV{EBRIX_QEMU_AARCH64}")
  else()
    find_program(EBRIX_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
  endif()
endif()
# Toolchain files are re-read in try_compile projects; pass these through to them.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES
     EBRIX_AARCH64_PREFIX EBRIX_AARCH64_SYSROOT EBRIX_QEMU_AARCH64)

set(CMAKE_C_COMPILER ${EBRIX_AARCH64_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${EBRIX_AARCH64_PREFIX}g++)

# Debian's cross packages install the target libc/libstdc++ under /usr/aarch64-linux-gnu
# (a multiarch-style tree, not a full sysroot), and the cross gcc already knows it, so no
# --sysroot is passed; the root is only used for finding target libraries and for qemu.
set(CMAKE_FIND_ROOT_PATH ${EBRIX_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest (and try_run) prefix every target executable with this, so `ctest` works unchanged.
if(EBRIX_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${EBRIX_QEMU_AARCH64} -L ${EBRIX_AARCH64_SYSROOT})
endif()
