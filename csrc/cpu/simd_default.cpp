// The vectorised CPU loops for any CPU (ATen's generic vector type: scalar exp and log1p).
#define S2R_SIMD_TABLE kSimdDefault
#include "simd_impl.h"

#include <cstdlib>
#include <string_view>

namespace sim2real_fast::cpu {

namespace {

const Simd& select() {
#if defined(__x86_64__) || defined(_M_X64)
  const char* env = std::getenv("ATEN_CPU_CAPABILITY");
  const std::string_view cap = env == nullptr ? "" : env;
  if (cap == "default") return kSimdDefault;
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512 && cap != "avx2") return kSimdAvx512;
  if (avx2) return kSimdAvx2;
#endif
  return kSimdDefault;
}

}  // namespace

const Simd& simd() {
  static const Simd& chosen = select();
  return chosen;
}

}  // namespace sim2real_fast::cpu
