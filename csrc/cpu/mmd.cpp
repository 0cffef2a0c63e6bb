// CPU (OpenMP) tile kernels of the multi-kernel MMD and its CPU registration.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <omp.h>
#include <torch/library.h>

#include <cmath>

#include "sim2real_fast/mmd.h"

namespace sim2real_fast::mmd {
namespace {

// Squared distance from the centred norms and dot product; NaN passes through (no fmax).
template <typename T>
inline T squared_distance(T norm_a, T norm_b, T dot) {
  const T d = norm_a + norm_b - T(2) * dot;
  return d < T(0) ? T(0) : d;
}

// k(d) = sum_k w_k exp(c_k d) and its slope dk/dd = sum_k w_k c_k exp(c_k d), sharing the exponentials.
template <typename T, bool kSum, bool kGrad>
inline void kernel_terms(T d, const T* c, const T* w, int64_t k, T& value, T& slope) {
  value = 0;
  slope = 0;
  for (int64_t q = 0; q < k; ++q) {
    const T e = w[q] * std::exp(c[q] * d);
    if constexpr (kSum) value += e;
    if constexpr (kGrad) slope += c[q] * e;
  }
}

template <typename T, bool kSum, bool kGrad>
double tile_impl(T* dot, const T* na, const T* nb, const T* c, const T* w, int64_t k, int64_t rows,
                 int64_t cols, bool strict_upper, T scale) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(dynamic, 8) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < rows; ++i) {
    T* row = dot + i * cols;
    const int64_t first = strict_upper ? std::min(i + 1, cols) : 0;
    if constexpr (kGrad) std::fill(row, row + first, T(0));
    double row_total = 0.0;
    for (int64_t j = first; j < cols; ++j) {
      T value, slope;
      kernel_terms<T, kSum, kGrad>(squared_distance(na[i], nb[j], row[j]), c, w, k, value, slope);
      if constexpr (kSum) row_total += value;
      if constexpr (kGrad) row[j] = scale * slope;
    }
    total += row_total;
  }
  return total;
}

template <typename T>
inline T pair_distance(const T* a, const T* b, int64_t d) {
  T s = 0;
  for (int64_t f = 0; f < d; ++f) {
    const T diff = a[f] - b[f];
    s += diff * diff;
  }
  return s;
}

// Gretton's linear estimator, pair l: a = x[2l], b = x[2l+1], c = y[2l], e = y[2l+1],
// h_l = k(a, b) + k(c, e) - k(a, e) - k(b, c); d/dp k(p, q) = 2 k'(d) (p - q).
template <typename T, bool kSum, bool kGrad>
double linear_impl(const T* x, const T* y, const T* c, const T* w, int64_t k, int64_t pairs,
                   int64_t d, T scale, T* gx, T* gy) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) num_threads(at::get_num_threads())
  for (int64_t l = 0; l < pairs; ++l) {
    const T *a = x + 2 * l * d, *b = a + d, *cc = y + 2 * l * d, *e = cc + d;
    T v_ab, v_ce, v_ae, v_bc, s_ab, s_ce, s_ae, s_bc;
    kernel_terms<T, kSum, kGrad>(pair_distance(a, b, d), c, w, k, v_ab, s_ab);
    kernel_terms<T, kSum, kGrad>(pair_distance(cc, e, d), c, w, k, v_ce, s_ce);
    kernel_terms<T, kSum, kGrad>(pair_distance(a, e, d), c, w, k, v_ae, s_ae);
    kernel_terms<T, kSum, kGrad>(pair_distance(b, cc, d), c, w, k, v_bc, s_bc);
    if constexpr (kSum) total += static_cast<double>(v_ab) + v_ce - v_ae - v_bc;
    if constexpr (kGrad) {
      s_ab *= T(2) * scale, s_ce *= T(2) * scale, s_ae *= T(2) * scale, s_bc *= T(2) * scale;
      T *ga = gx + 2 * l * d, *gb = ga + d, *gc = gy + 2 * l * d, *ge = gc + d;
      for (int64_t f = 0; f < d; ++f) {
        ga[f] = s_ab * (a[f] - b[f]) - s_ae * (a[f] - e[f]);
        gb[f] = s_ab * (b[f] - a[f]) - s_bc * (b[f] - cc[f]);
        gc[f] = s_ce * (cc[f] - e[f]) - s_bc * (cc[f] - b[f]);
        ge[f] = s_ce * (e[f] - cc[f]) - s_ae * (e[f] - a[f]);
      }
    }
  }
  return total;
}

void tile(at::Tensor& dot, const at::Tensor& na, const at::Tensor& nb, const at::Tensor& c,
          const at::Tensor& w, bool strict_upper, Mode mode, double scale, at::Tensor& acc,
          int64_t slot) {
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES(dot.scalar_type(), "mmd_tile_cpu", [&] {
    total = with_mode(mode, [&]<bool kSum, bool kGrad>() {
      return tile_impl<scalar_t, kSum, kGrad>(
          dot.mutable_data_ptr<scalar_t>(), na.const_data_ptr<scalar_t>(), nb.const_data_ptr<scalar_t>(),
          c.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), c.size(0), dot.size(0),
          dot.size(1), strict_upper, static_cast<scalar_t>(scale));
    });
  });
  if (mode.sum) acc.mutable_data_ptr<double>()[slot] += total;
}

void linear(const at::Tensor& x, const at::Tensor& y, const at::Tensor& c, const at::Tensor& w,
            int64_t pairs, Mode mode, double scale, at::Tensor& acc, at::Tensor& gx, at::Tensor& gy) {
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmd_linear_cpu", [&] {
    total = with_mode(mode, [&]<bool kSum, bool kGrad>() {
      return linear_impl<scalar_t, kSum, kGrad>(
          x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
          w.const_data_ptr<scalar_t>(), c.size(0), pairs, x.size(1), static_cast<scalar_t>(scale),
          kGrad ? gx.mutable_data_ptr<scalar_t>() : nullptr, kGrad ? gy.mutable_data_ptr<scalar_t>() : nullptr);
    });
  });
  if (mode.sum) acc.mutable_data_ptr<double>()[0] += total;
}

// 512 x 512 blocks: the dot-product block (1 MiB in float32) stays in cache for the tile kernel.
constexpr Backend kCpuBackend{512, tile, linear};

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CPU, m) {
  using Ops = BoundOps<kCpuBackend>;
  m.impl("mmd", &Ops::value);
  m.impl("_mmd_with_grad", &Ops::value_and_grad);
  m.impl("_mmd_backward", &Ops::grad);
}

}  // namespace sim2real_fast::mmd
