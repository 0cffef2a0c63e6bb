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

template <typename T>
inline T kernel_value(T d, const T* c, const T* w, int64_t k) {
  T v = 0;
  for (int64_t q = 0; q < k; ++q) v += w[q] * std::exp(c[q] * d);
  return v;
}

// dk/dd = sum_k w_k c_k exp(c_k d)
template <typename T>
inline T kernel_slope(T d, const T* c, const T* w, int64_t k) {
  T v = 0;
  for (int64_t q = 0; q < k; ++q) v += w[q] * c[q] * std::exp(c[q] * d);
  return v;
}

template <typename T>
double tile_sum_impl(const T* dot, const T* na, const T* nb, const T* c, const T* w, int64_t k,
                     int64_t rows, int64_t cols, bool strict_upper) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(dynamic, 8) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = dot + i * cols;
    double row_total = 0.0;
    for (int64_t j = strict_upper ? i + 1 : 0; j < cols; ++j) {
      row_total += kernel_value(squared_distance(na[i], nb[j], row[j]), c, w, k);
    }
    total += row_total;
  }
  return total;
}

template <typename T>
void tile_grad_impl(T* dot, const T* na, const T* nb, const T* c, const T* w, int64_t k,
                    int64_t rows, int64_t cols, bool strict_upper, T scale) {
#pragma omp parallel for schedule(dynamic, 8) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < rows; ++i) {
    T* row = dot + i * cols;
    const int64_t first = strict_upper ? std::min(i + 1, cols) : 0;
    for (int64_t j = 0; j < first; ++j) row[j] = T(0);
    for (int64_t j = first; j < cols; ++j) {
      row[j] = scale * kernel_slope(squared_distance(na[i], nb[j], row[j]), c, w, k);
    }
  }
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
// h_l = k(a, b) + k(c, e) - k(a, e) - k(b, c).
template <typename T>
double linear_sum_impl(const T* x, const T* y, const T* c, const T* w, int64_t k, int64_t pairs,
                       int64_t d) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) num_threads(at::get_num_threads())
  for (int64_t l = 0; l < pairs; ++l) {
    const T *a = x + 2 * l * d, *b = a + d, *cc = y + 2 * l * d, *e = cc + d;
    total += static_cast<double>(kernel_value(pair_distance(a, b, d), c, w, k)) +
             kernel_value(pair_distance(cc, e, d), c, w, k) -
             kernel_value(pair_distance(a, e, d), c, w, k) -
             kernel_value(pair_distance(b, cc, d), c, w, k);
  }
  return total;
}

template <typename T>
void linear_grad_impl(const T* x, const T* y, const T* c, const T* w, int64_t k, int64_t pairs,
                      int64_t d, T scale, T* gx, T* gy) {
#pragma omp parallel for num_threads(at::get_num_threads())
  for (int64_t l = 0; l < pairs; ++l) {
    const T *a = x + 2 * l * d, *b = a + d, *cc = y + 2 * l * d, *e = cc + d;
    T *ga = gx + 2 * l * d, *gb = ga + d, *gc = gy + 2 * l * d, *ge = gc + d;
    // 2 * dk/dd for each of the four pairs; d/dp k(p, q) = 2 k'(d) (p - q).
    const T s_ab = T(2) * scale * kernel_slope(pair_distance(a, b, d), c, w, k);
    const T s_ce = T(2) * scale * kernel_slope(pair_distance(cc, e, d), c, w, k);
    const T s_ae = T(2) * scale * kernel_slope(pair_distance(a, e, d), c, w, k);
    const T s_bc = T(2) * scale * kernel_slope(pair_distance(b, cc, d), c, w, k);
    for (int64_t f = 0; f < d; ++f) {
      ga[f] = s_ab * (a[f] - b[f]) - s_ae * (a[f] - e[f]);
      gb[f] = s_ab * (b[f] - a[f]) - s_bc * (b[f] - cc[f]);
      gc[f] = s_ce * (cc[f] - e[f]) - s_bc * (cc[f] - b[f]);
      ge[f] = s_ce * (e[f] - cc[f]) - s_ae * (e[f] - a[f]);
    }
  }
}

void tile_sum(const at::Tensor& dot, const at::Tensor& na, const at::Tensor& nb,
              const at::Tensor& c, const at::Tensor& w, bool strict_upper, at::Tensor& acc,
              int64_t slot) {
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES(dot.scalar_type(), "mmd_tile_sum_cpu", [&] {
    total = tile_sum_impl<scalar_t>(dot.const_data_ptr<scalar_t>(), na.const_data_ptr<scalar_t>(),
                                    nb.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
                                    w.const_data_ptr<scalar_t>(), c.size(0), dot.size(0),
                                    dot.size(1), strict_upper);
  });
  acc.mutable_data_ptr<double>()[slot] += total;
}

void tile_grad(at::Tensor& dot, const at::Tensor& na, const at::Tensor& nb, const at::Tensor& c,
               const at::Tensor& w, bool strict_upper, double scale) {
  AT_DISPATCH_FLOATING_TYPES(dot.scalar_type(), "mmd_tile_grad_cpu", [&] {
    tile_grad_impl<scalar_t>(dot.mutable_data_ptr<scalar_t>(), na.const_data_ptr<scalar_t>(),
                             nb.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
                             w.const_data_ptr<scalar_t>(), c.size(0), dot.size(0), dot.size(1),
                             strict_upper, static_cast<scalar_t>(scale));
  });
}

void linear_sum(const at::Tensor& x, const at::Tensor& y, const at::Tensor& c,
                const at::Tensor& w, int64_t pairs, at::Tensor& acc) {
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmd_linear_sum_cpu", [&] {
    total = linear_sum_impl<scalar_t>(x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                      c.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                      c.size(0), pairs, x.size(1));
  });
  acc.mutable_data_ptr<double>()[0] += total;
}

void linear_grad(const at::Tensor& x, const at::Tensor& y, const at::Tensor& c,
                 const at::Tensor& w, int64_t pairs, double scale, at::Tensor& gx, at::Tensor& gy) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmd_linear_grad_cpu", [&] {
    linear_grad_impl<scalar_t>(x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                               c.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                               c.size(0), pairs, x.size(1), static_cast<scalar_t>(scale),
                               gx.mutable_data_ptr<scalar_t>(), gy.mutable_data_ptr<scalar_t>());
  });
}

// 512 x 512 blocks: the dot-product block (1 MiB in float32) stays in cache for the tile kernel.
constexpr Backend kCpuBackend{512, tile_sum, tile_grad, linear_sum, linear_grad};

at::Tensor mmd_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                   const at::Tensor& weights, c10::string_view estimator) {
  return forward(x, y, sigma2, weights, std::string_view(estimator.data(), estimator.size()),
                 kCpuBackend);
}

std::tuple<at::Tensor, at::Tensor> mmd_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                    const at::Tensor& y, const at::Tensor& sigma2,
                                                    const at::Tensor& weights,
                                                    c10::string_view estimator) {
  return backward(grad, x, y, sigma2, weights,
                  std::string_view(estimator.data(), estimator.size()), kCpuBackend);
}

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CPU, m) {
  m.impl("mmd", &mmd_cpu);
  m.impl("_mmd_backward", &mmd_backward_cpu);
}

}  // namespace sim2real_fast::mmd
