#include "dispatch.h"

#include <cstdlib>

#include "../error.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define EBRIX_X86 1
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define EBRIX_ARM64 1
#endif

namespace ebrix::simd {
namespace {

#ifdef EBRIX_X86
struct X86Features {
  bool avx2 = false;
  bool avx512 = false;
  bool avxVnni = false;     // with avx2: VEX vpdpbusd
  bool avx512Vnni = false;  // with avx512: EVEX vpdpbusd
};

// Extended control register 0: which register states the OS saves on a context switch.
unsigned long long readXcr0() {
  unsigned int eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

X86Features detectX86() {
  X86Features f;
  unsigned int eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27);
  const bool avx = ecx & (1u << 28);
  const bool fma = ecx & (1u << 12);
  const bool f16c = ecx & (1u << 29);
  if (!osxsave || !avx) return f;
  const unsigned long long xcr0 = readXcr0();
  const bool ymmSaved = (xcr0 & 0x6) == 0x6;             // SSE + AVX state
  const bool zmmSaved = (xcr0 & 0xE6) == 0xE6;           // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!ymmSaved) return f;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned maxSubleaf = eax;
  const bool vnni512 = ecx & (1u << 11);
  const bool avx2 = ebx & (1u << 5);
  const bool avx512f = ebx & (1u << 16);
  const bool avx512dq = ebx & (1u << 17);
  const bool avx512bw = ebx & (1u << 30);
  const bool avx512vl = ebx & (1u << 31);
  f.avx2 = avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmmSaved && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512Vnni = f.avx512 && vnni512;
  if (maxSubleaf >= 1) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    f.avxVnni = f.avx2 && (eax & (1u << 4));
  }
  return f;
}

const X86Features& x86Features() {
  static const X86Features features = detectX86();
  return features;
}

// A level's table with its i8 kernels replaced by a faster variant of the same level.
Kernels withI8(const Kernels& base, const KernelsI8& i8) {
  Kernels k = base;
  k.i8 = i8;
  return k;
}

const Kernels& avx2Table() {
  if (!x86Features().avxVnni) return avx2Kernels();
  static const Kernels table = withI8(avx2Kernels(), avxVnniI8Kernels());
  return table;
}

const Kernels& avx512Table() {
  if (!x86Features().avx512Vnni) return avx512Kernels();
  static const Kernels table = withI8(avx512Kernels(), avx512VnniI8Kernels());
  return table;
}
#endif

}  // namespace

const char* levelName(Level level) {
  switch (level) {
    case Level::Scalar: return "scalar";
    case Level::Avx2: return "avx2";
    case Level::Avx512: return "avx512";
    case Level::Neon: return "neon";
  }
  return "scalar";
}

bool parseLevel(const std::string& name, Level* out) {
  if (name == "scalar") *out = Level::Scalar;
  else if (name == "avx2") *out = Level::Avx2;
  else if (name == "avx512") *out = Level::Avx512;
  else if (name == "neon") *out = Level::Neon;
  else return false;
  return true;
}

const char* elementName(Element element) {
  switch (element) {
    case Element::F32: return "f32";
    case Element::F16: return "f16";
    case Element::BF16: return "bf16";
    case Element::I8: return "i8";
  }
  return "f32";
}

bool parseElement(const std::string& name, Element* out) {
  if (name == "f32") *out = Element::F32;
  else if (name == "f16") *out = Element::F16;
  else if (name == "bf16") *out = Element::BF16;
  else if (name == "i8") *out = Element::I8;
  else return false;
  return true;
}

bool isSupported(Level level) {
  switch (level) {
    case Level::Scalar: return true;
#ifdef EBRIX_X86
    case Level::Avx2: return x86Features().avx2;
    case Level::Avx512: return x86Features().avx512;
#endif
#ifdef EBRIX_ARM64
    case Level::Neon: return true;
#endif
    default: return false;
  }
}

std::vector<Level> supportedLevels() {
  std::vector<Level> levels;
  for (Level level : {Level::Scalar, Level::Neon, Level::Avx2, Level::Avx512}) {
    if (isSupported(level)) levels.push_back(level);
  }
  return levels;
}

Level bestLevel() { return supportedLevels().back(); }

Level defaultLevel() {
  const char* forced = std::getenv("EBRIX_SIMD");
  if (forced == nullptr || *forced == '\0') return bestLevel();
  Level level;
  if (!parseLevel(forced, &level)) {
    throw Error(ErrorCode::UnsupportedSimd,
                std::string("Expected one of scalar, avx2, avx512, neon for EBRIX_SIMD but received ") +
                    forced);
  }
  if (!isSupported(level)) {
    throw Error(ErrorCode::UnsupportedSimd,
                std::string("EBRIX_SIMD=") + forced + " is not supported by this CPU (best: " +
                    levelName(bestLevel()) + ")");
  }
  return level;
}

const Kernels& kernelsFor(Level level) {
  if (!isSupported(level)) {
    throw Error(ErrorCode::UnsupportedSimd,
                std::string("SIMD level ") + levelName(level) + " is not supported by this CPU (best: " +
                    levelName(bestLevel()) + ")");
  }
  switch (level) {
#ifdef EBRIX_X86
    case Level::Avx2: return avx2Table();
    case Level::Avx512: return avx512Table();
#endif
#ifdef EBRIX_ARM64
    case Level::Neon: return neonKernels();
#endif
    default: return scalarKernels();
  }
}

std::vector<const KernelsI8*> supportedI8Kernels() {
  std::vector<const KernelsI8*> out;
  for (Level level : supportedLevels()) {
    switch (level) {
#ifdef EBRIX_X86
      case Level::Avx2:
        out.push_back(&avx2Kernels().i8);
        if (x86Features().avxVnni) out.push_back(&avxVnniI8Kernels());
        break;
      case Level::Avx512:
        out.push_back(&avx512Kernels().i8);
        if (x86Features().avx512Vnni) out.push_back(&avx512VnniI8Kernels());
        break;
#endif
      default:
        out.push_back(&kernelsFor(level).i8);
    }
  }
  return out;
}

}  // namespace ebrix::simd
