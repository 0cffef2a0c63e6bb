// Body of the CPU tile pass (see mmd_tile.h); included by one translation unit per instruction
// set, which defines CPU_CAPABILITY for ATen's vector types and S2R_TILE_FUNCTION.
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "mmd_tile.h"
#include "sim2real_fast/mmd_math.h"

namespace sim2real_fast::mmd::cpu {
namespace {

template <typename T, bool kSum, bool kGrad>
double tile_impl(const TileArgs& a) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kLanes = V::size();
  T* dot = static_cast<T*>(a.dot);
  const T* na = static_cast<const T*>(a.norm_a);
  const T* nb = static_cast<const T*>(a.norm_b);
  const T* c = static_cast<const T*>(a.c);
  const T* w = static_cast<const T*>(a.w);
  T* row_sums = static_cast<T*>(a.row_sums);
  T* col_sums = static_cast<T*>(a.col_sums);
  const T scale = static_cast<T>(a.scale);
  const int64_t cols = a.cols;
  if constexpr (kGrad) std::fill(col_sums, col_sums + cols, T(0));
  double total = 0.0;
  for (int64_t i = 0; i < a.rows; ++i) {
    T* row = dot + i * cols;
    const int64_t first = a.diagonal ? std::min(i + 1, cols) : 0;
    if constexpr (kGrad) std::fill(row, row + first, T(0));
    const V norm_i(na[i]);
    double lanes[kLanes] = {};
    V row_slope(0);
    int64_t j = first;
    for (; j + kLanes <= cols; j += kLanes) {
      V value, slope;
      math::kernel_terms<kSum, kGrad>(math::squared_distance(norm_i, V::loadu(nb + j), V::loadu(row + j)), c,
                                      w, a.k, value, slope);
      if constexpr (kSum) {
        T buffer[kLanes];
        value.store(buffer);
        for (int64_t l = 0; l < kLanes; ++l) lanes[l] += buffer[l];
      }
      if constexpr (kGrad) {
        const V coefficient = slope * V(scale);
        coefficient.store(row + j);
        row_slope = row_slope + coefficient;
        (V::loadu(col_sums + j) + coefficient).store(col_sums + j);
      }
    }
    T tail_slope = 0;
    for (; j < cols; ++j) {
      T value, slope;
      math::kernel_terms<kSum, kGrad>(math::squared_distance(na[i], nb[j], row[j]), c, w, a.k, value, slope);
      if constexpr (kSum) lanes[0] += value;
      if constexpr (kGrad) {
        row[j] = scale * slope;
        tail_slope += row[j];
        col_sums[j] += row[j];
      }
    }
    if constexpr (kSum) {
      for (int64_t l = 0; l < kLanes; ++l) total += lanes[l];
    }
    if constexpr (kGrad) {
      T buffer[kLanes];
      row_slope.store(buffer);
      T s = tail_slope;
      for (int64_t l = 0; l < kLanes; ++l) s += buffer[l];
      row_sums[i] = s;
    }
  }
  if constexpr (kGrad) {
    if (a.diagonal) {  // C + C^T: mirror the strict upper triangle, add the column sums
      for (int64_t i = 0; i < a.rows; ++i) {
        for (int64_t j = 0; j < i; ++j) dot[i * cols + j] = dot[j * cols + i];
        row_sums[i] += col_sums[i];
      }
    }
  }
  return total;
}

}  // namespace

double S2R_TILE_FUNCTION(const TileArgs& args) {
  TORCH_CHECK(args.sum || args.grad, "mmd tile: nothing to compute");
  auto run = [&]<typename T>() {
    if (args.sum && args.grad) return tile_impl<T, true, true>(args);
    if (args.sum) return tile_impl<T, true, false>(args);
    return tile_impl<T, false, true>(args);
  };
  if (args.dtype == c10::ScalarType::Float) return run.template operator()<float>();
  TORCH_CHECK(args.dtype == c10::ScalarType::Double, "mmd tile: float32 or float64 expected");
  return run.template operator()<double>();
}

}  // namespace sim2real_fast::mmd::cpu
