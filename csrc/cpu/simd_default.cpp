// The vectorised CPU loops for any CPU (ATen's generic vector type: scalar exp and log1p).
#define S2R_SIMD_TABLE kSimdDefault
#include "simd_impl.h"

#include <cstdlib>
#include <string_view>

namespace sim2real_fast::cpu {

namespace {

// AVX2 + FMA where the CPU has them, unless ATEN_CPU_CAPABILITY=default asks for the generic code
// (the variable ATen reads to pick its own kernels).
bool use_avx2() {
#if defined(__x86_64__) || defined(_M_X64)
  const char* capability = std::getenv("ATEN_CPU_CAPABILITY");
  if (capability != nullptr && std::string_view(capability) == "default") return false;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

const Simd& simd() {
  static const bool avx2 = use_avx2();
  return avx2 ? kSimdAvx2 : kSimdDefault;
}

}  // namespace sim2real_fast::cpu
