// The vectorised CPU loops for any CPU (ATen's generic vector type: scalar exp and log1p).
#define S2R_SIMD_TABLE kSimdDefault
#include "simd_impl.h"

namespace sim2real_fast::cpu {

const Simd& simd() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return kSimdAvx2;
#endif
  return kSimdDefault;
}

}  // namespace sim2real_fast::cpu
