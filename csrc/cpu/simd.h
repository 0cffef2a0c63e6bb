// CPU loops that need ATen's vector types (at::vec::Vectorized: Sleef exp and log1p, which keep
// NaN, unlike -ffast-math). They are compiled once per instruction set (simd_default.cpp,
// simd_avx2.cpp with -mavx2 -mfma, simd_avx512.cpp with AVX-512 F/BW/VL/DQ) and picked at run time
// by simd().
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace sim2real_fast::cpu {

// One block of the MMD's pair matrix: dot products -> kernel sums and gradient coefficients.
struct MmdTileArgs {
  void* dot;            // (rows, cols) row-major dot products; gradient coefficients on return
  const void* norm_a;   // (rows,) squared norms of the centred rows
  const void* norm_b;   // (cols,)
  int64_t rows, cols;
  bool diagonal;        // a block on the diagonal of a within-domain matrix: pairs j > i only
  const void* c;        // (k,) exponent coefficients
  const void* w;        // (k,) weights
  int k;
  bool doubling;        // see mmd::math::kernel_terms
  double scale;         // gradient coefficient C_ij = scale * dk/dd(d_ij)
  bool sum, grad;
  void* row_sums;       // (rows,) sum_j C_ij (grad); on a diagonal block, of C + C^T
  void* col_sums;       // (cols,) sum_i C_ij (grad; scratch on a diagonal block)
  c10::ScalarType dtype;
};

struct Simd {
  // Returns the kernel sum over the block's pairs (float64) when args.sum. When args.grad, the
  // block is overwritten by C (zero where masked; on a diagonal block by the symmetric C + C^T).
  double (*mmd_tile)(const MmdTileArgs& args);
  // row[0, n) <- log1p(row[0, n)) (hits_to_image's "log1p" normalisation).
  void (*log1p_float)(float* row, int64_t n);
  void (*log1p_double)(double* row, int64_t n);
};

extern const Simd kSimdDefault;
extern const Simd kSimdAvx2;
extern const Simd kSimdAvx512;

// The functions for this CPU: the widest of AVX-512, AVX2 + FMA and the generic build that it has,
// capped by ATEN_CPU_CAPABILITY (default, avx2, avx512) as ATen's own kernels are.
const Simd& simd();

}  // namespace sim2real_fast::cpu
