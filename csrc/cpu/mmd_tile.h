// The CPU tile pass of the MMD (one block of dot products -> kernel sums and gradient
// coefficients), compiled once per instruction set (mmd_tile_default.cpp, mmd_tile_avx2.cpp) and
// picked at run time; the element math is sim2real_fast/mmd_math.h on at::vec::Vectorized lanes.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace sim2real_fast::mmd::cpu {

struct TileArgs {
  void* dot;            // (rows, cols) row-major dot products; gradient coefficients on return
  const void* norm_a;   // (rows,) squared norms of the centred rows
  const void* norm_b;   // (cols,)
  int64_t rows, cols;
  bool diagonal;        // a block on the diagonal of a within-domain matrix: pairs j > i only
  const void* c;        // (k,) exponent coefficients
  const void* w;        // (k,) weights
  int k;
  double scale;         // gradient coefficient C_ij = scale * dk/dd(d_ij)
  bool sum, grad;
  void* row_sums;       // (rows,) sum_j C_ij (grad); on a diagonal block, of C + C^T
  void* col_sums;       // (cols,) sum_i C_ij (grad; scratch on a diagonal block)
  c10::ScalarType dtype;
};

// Returns the kernel sum over the block's pairs (float64) when args.sum. When args.grad, the block
// is overwritten by C (zero where masked; on a diagonal block by the symmetric C + C^T).
double tile_default(const TileArgs& args);
double tile_avx2(const TileArgs& args);

}  // namespace sim2real_fast::mmd::cpu
