#!/usr/bin/env bash
# Builds the core's C++ tests twice, with AddressSanitizer + UndefinedBehaviorSanitizer and
# with ThreadSanitizer, and runs each (about a minute on 2 cores). Not part of `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
for variant in "asan:address,undefined" "tsan:thread"; do
  name=${variant%%:*}
  flags=${variant#*:}
  echo "==> $name (-fsanitize=$flags)"
  cmake -S . -B "build-$name" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=$flags" >/dev/null
  cmake --build "build-$name" --target ebrix_core_tests -j "$jobs" >/dev/null
  if [ "$name" = tsan ]; then
    # usearch's lock-free graph reads (see the file) are by design; anything else still fails.
    TSAN_OPTIONS="suppressions=$PWD/native/core/tests/tsan-usearch.supp ${TSAN_OPTIONS:-}" "build-$name/ebrix_core_tests"
  else
    "build-$name/ebrix_core_tests"
  fi
done
