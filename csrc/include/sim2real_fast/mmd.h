// Multi-kernel Gaussian MMD^2: a device-generic tiled driver plus per-device tile kernels.
//
// Kernel: k(a, b) = sum_k w_k exp(c_k ||a - b||^2) with c_k = -1 / (2 sigma2_k).
// The quadratic estimators walk (tile x tile) blocks of the pair matrices. For each block the
// driver centres the rows by the pooled mean (distances are translation invariant, centring keeps
// ||a||^2 + ||b||^2 - 2 a.b accurate), writes the block of dot products into a reusable scratch
// buffer with one GEMM, and hands it to the device's tile kernel, which turns it into distances,
// kernel values and their sum and/or the gradient coefficients (applied by two more GEMMs).
// No n x m matrix exists at any time: memory is O((n + m) d) plus one tile.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace sim2real_fast::mmd {

enum class Estimator { kUnbiased, kBiased, kLinear };

// Parses "unbiased" / "biased" / "linear"; anything else is an error naming the argument.
Estimator parse_estimator(c10::string_view estimator);

// What a device pass computes: the kernel sums, the gradient coefficients, or both from one
// evaluation of the exponentials (the fused forward used when the inputs require grad).
struct Mode {
  bool sum;
  bool grad;
};

// Calls fn.template operator()<kSum, kGrad>() for a runtime mode: one kernel instantiation each.
template <typename Fn>
auto with_mode(Mode mode, Fn&& fn) {
  if (mode.sum && mode.grad) return fn.template operator()<true, true>();
  if (mode.sum) return fn.template operator()<true, false>();
  return fn.template operator()<false, true>();
}

// The device-specific pieces. Tensors handed to them are contiguous and of one dtype and device.
struct Backend {
  int64_t tile_rows;  // rows (and columns) of one block of the pair matrix

  // Over the (TI, TJ) block, with d_ij = max(na_i + nb_j - 2 dot_ij, 0) and strict_upper keeping
  // only j > i (diagonal blocks of a within-domain matrix):
  //   mode.sum:  acc[slot] += sum_ij k(d_ij)   (acc: float64 (3,));
  //   mode.grad: dot_ij <- scale * dk/dd(d_ij) in place, 0 where strict_upper masks.
  void (*tile)(at::Tensor& dot, const at::Tensor& na, const at::Tensor& nb, const at::Tensor& c,
               const at::Tensor& w, bool strict_upper, Mode mode, double scale, at::Tensor& acc,
               int64_t slot);

  // Linear-time estimator on `pairs` consecutive pairs (x_2l, x_2l+1, y_2l, y_2l+1):
  //   mode.sum:  acc[0] += sum_l h_l;
  //   mode.grad: gx, gy (zero-initialised) <- scale * dh/dx, dh/dy summed over the pairs.
  void (*linear)(const at::Tensor& x, const at::Tensor& y, const at::Tensor& c,
                 const at::Tensor& w, int64_t pairs, Mode mode, double scale, at::Tensor& acc,
                 at::Tensor& gx, at::Tensor& gy);
};

// sigma2 (K,), weights (K,): per-kernel squared bandwidths and weights. Returns a 0-dim tensor.
at::Tensor forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                   const at::Tensor& weights, c10::string_view estimator, const Backend& backend);

// MMD^2 and its gradients with respect to x and y in one pass over the blocks.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_with_grad(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2, const at::Tensor& weights,
    c10::string_view estimator, const Backend& backend);

// Gradients of grad * MMD^2 with respect to x and y (sigma2 and weights are constants).
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x,
                                            const at::Tensor& y, const at::Tensor& sigma2,
                                            const at::Tensor& weights, c10::string_view estimator,
                                            const Backend& backend);

// The three ops bound to one device's backend, for TORCH_LIBRARY_IMPL.
template <const Backend& kBackend>
struct BoundOps {
  static at::Tensor value(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                          const at::Tensor& weights, c10::string_view estimator) {
    return forward(x, y, sigma2, weights, estimator, kBackend);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> value_and_grad(
      const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
      const at::Tensor& weights, c10::string_view estimator) {
    return forward_with_grad(x, y, sigma2, weights, estimator, kBackend);
  }
  static std::tuple<at::Tensor, at::Tensor> grad(const at::Tensor& grad, const at::Tensor& x,
                                                 const at::Tensor& y, const at::Tensor& sigma2,
                                                 const at::Tensor& weights,
                                                 c10::string_view estimator) {
    return backward(grad, x, y, sigma2, weights, estimator, kBackend);
  }
};

}  // namespace sim2real_fast::mmd
