// Picks the kernel table for this CPU once. `EBRIX_SIMD=scalar|avx2|avx512|neon` forces a
// level (an unsupported or unknown value is an error, never a silent downgrade or a SIGILL).
#pragma once

#include <string>
#include <vector>

#include "kernels.h"

namespace ebrix::simd {

const char* levelName(Level level);
bool parseLevel(const std::string& name, Level* out);

// 'f32', 'f16', 'bf16', 'i8'.
const char* elementName(Element element);
bool parseElement(const std::string& name, Element* out);

// Levels this CPU and OS can run, best last (scalar is always first).
std::vector<Level> supportedLevels();
Level bestLevel();
bool isSupported(Level level);

// The level an index uses when none is asked for: EBRIX_SIMD if set, else the best one.
// Throws ebrix::Error(UnsupportedSimd) when EBRIX_SIMD names a level this CPU lacks.
Level defaultLevel();

// Throws ebrix::Error(UnsupportedSimd) when the level cannot run here. The table's i8
// kernels are the best variant of the level this CPU runs (VNNI where present).
const Kernels& kernelsFor(Level level);

// Every i8 kernel variant this CPU runs, scalar first: each level's own, plus the VNNI
// variants where the CPU has them (for tests against the scalar reference, and benches).
std::vector<const KernelsI8*> supportedI8Kernels();

}  // namespace ebrix::simd
