// Bodies of the vectorised CPU loops (see simd.h); included by one translation unit per
// instruction set, which defines CPU_CAPABILITY for ATen's vector types and S2R_SIMD_TABLE.
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "sim2real_fast/hits_to_image_math.h"
#include "sim2real_fast/mmd_math.h"
#include "simd.h"

namespace sim2real_fast::cpu {
namespace {

template <typename T, bool kSum, bool kGrad>
double tile_impl(const MmdTileArgs& a) {
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
      mmd::math::kernel_terms<kSum, kGrad>(mmd::math::squared_distance(norm_i, V::loadu(nb + j), V::loadu(row + j)), c,
                                      w, a.k, a.doubling, value, slope);
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
    if (j < cols) {  // the last, partial vector: lanes from `tail` on are padding and ignored
      const int tail = static_cast<int>(cols - j);
      V value, slope;
      mmd::math::kernel_terms<kSum, kGrad>(
          mmd::math::squared_distance(norm_i, V::loadu(nb + j, tail), V::loadu(row + j, tail)), c, w, a.k,
          a.doubling, value, slope);
      T buffer[kLanes];
      if constexpr (kSum) {
        value.store(buffer);
        for (int l = 0; l < tail; ++l) lanes[l] += buffer[l];
      }
      if constexpr (kGrad) {
        (slope * V(scale)).store(buffer);
        for (int l = 0; l < tail; ++l) {
          row[j + l] = buffer[l];
          tail_slope += buffer[l];
          col_sums[j + l] += buffer[l];
        }
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

double mmd_tile(const MmdTileArgs& args) {
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

// log1p for float without calls or branches, so that a row's loop vectorises (this file is built
// with -fno-trapping-math, which lets GCC turn the selects into blends): log(u) for u = 1 + x from
// Cephes' logf polynomial on the mantissa in [sqrt(1/2), sqrt(2)), plus the rounding correction
// (x - (u - 1)) / u. At most 1.5 ulp from the correctly rounded log1p (checked over every 97th float);
// -1 -> -inf, below -1 or NaN -> NaN, +inf -> +inf, as std::log1p.
inline float log1p_vectorisable(float x) {
  const float u = 1.0f + x;
  const int32_t bits = std::bit_cast<int32_t>(u);
  int32_t k = ((bits >> 23) & 0xff) - 127;
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f800000);  // u = m 2^k, m in [1, 2)
  const bool high = m > 1.41421356f;
  m = high ? 0.5f * m : m;
  k = high ? k + 1 : k;
  const float f = m - 1.0f, z = f * f, kf = static_cast<float>(k);
  float p = 7.0376836292e-2f;
  for (const float coefficient : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f,
                                  -1.6668057665e-1f, 2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f}) {
    p = p * f + coefficient;
  }
  float r = f + (f * z * p - 2.12194440e-4f * kf - 0.5f * z);
  r += 0.693359375f * kf;
  r += (x - (u - 1.0f)) / u;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  r = x == kInf ? kInf : r;
  r = x == -1.0f ? -kInf : r;
  return x < -1.0f || x != x ? std::numeric_limits<float>::quiet_NaN() : r;
}

template <typename T>
void log1p_row(T* row, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) row[c] = log1p_vectorisable(row[c]);
    return;
  }
  using V = at::vec::Vectorized<T>;
  int64_t c = 0;
  for (; c + V::size() <= n; c += V::size()) {
    hits::math::normalised<hits::Normalize::kLog1p>(V::loadu(row + c), V(1)).store(row + c);
  }
  if (c < n) {
    const int tail = static_cast<int>(n - c);
    hits::math::normalised<hits::Normalize::kLog1p>(V::loadu(row + c, tail), V(1)).store(row + c, tail);
  }
}

}  // namespace

const Simd S2R_SIMD_TABLE{mmd_tile, log1p_row<float>, log1p_row<double>};

}  // namespace sim2real_fast::cpu
