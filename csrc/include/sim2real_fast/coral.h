// Deep CORAL, ||C_x - C_y||_F^2 / (4 d^2) with (n - 1)-normalised covariances: a device-generic
// chunked driver plus one per-device kernel. Rows are centred and scaled chunk by chunk into a
// scratch buffer and accumulated into the single (d, d) covariance difference by GEMMs: neither
// centred copy of x or y nor either covariance matrix is ever materialised.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace sim2real_fast::coral {

struct Backend {
  // out (rows, d) <- (src (rows, d) - mean (d,)) * scale, all contiguous.
  void (*centre)(const at::Tensor& src, const at::Tensor& mean, double scale, at::Tensor& out);
};

// Returns (loss (), cov_diff (d, d) = C_x - C_y).
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& y,
                                           const Backend& backend);

// Given G (d, d) = dL/d(cov_diff) (symmetric), returns
// (2 / (n - 1) (x - mean_x) G, -2 / (m - 1) (y - mean_y) G).
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& g, const at::Tensor& x,
                                            const at::Tensor& y, const Backend& backend);

// The two ops bound to one device's backend, for TORCH_LIBRARY_IMPL.
template <const Backend& kBackend>
struct BoundOps {
  static std::tuple<at::Tensor, at::Tensor> value(const at::Tensor& x, const at::Tensor& y) {
    return forward(x, y, kBackend);
  }
  static std::tuple<at::Tensor, at::Tensor> grad(const at::Tensor& g, const at::Tensor& x,
                                                 const at::Tensor& y) {
    return backward(g, x, y, kBackend);
  }
};

}  // namespace sim2real_fast::coral
