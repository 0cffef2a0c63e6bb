// Multi-kernel Gaussian MMD^2: device-generic checks and bookkeeping plus per-device passes.
//
// Kernel: k(a, b) = sum_k w_k exp(c_k ||a - b||^2) with c_k = -1 / (2 sigma2_k); element math in
// sim2real_fast/mmd_math.h. The quadratic estimators walk (tile x tile) blocks of the upper
// triangle of the pooled pair matrix (x-x and y-y upper triangles, x-y whole). Per block the rows
// are centred by the pooled mean (distances are translation invariant; centring keeps
// ||a||^2 + ||b||^2 - 2 a.b accurate), one GEMM gives the dot products, one fused pass turns them
// into kernel sums and/or gradient coefficients C, and GEMMs apply C to the rows. No n x m matrix
// exists at any time: memory is O((n + m) d) plus a few tiles.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace sim2real_fast::mmd {

enum class Estimator { kUnbiased, kBiased, kLinear };

// Parses "unbiased" / "biased" / "linear"; anything else is an error naming the argument.
Estimator parse_estimator(c10::string_view estimator);

// What a pass computes: the kernel sums, the gradient coefficients, or both from one evaluation of
// the exponentials (the fused forward used when the inputs require grad).
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

// Slots of the pair sums: x-x (unordered pairs i < j), y-y (likewise), x-y (all pairs).
enum Slot : int { kXX = 0, kYY = 1, kXY = 2 };

// One pass over the pairs. Tensors are contiguous, detached, of one dtype and device.
struct Pass {
  at::Tensor x, y;      // (n, d), (m, d)
  at::Tensor c, w;      // (K,) exponent coefficients and weights, widest kernel first
  bool doubling;        // c[q] == 2 c[q - 1] exactly: one exponential per pair (mmd_math.h)
  at::Tensor mean;      // (d,) pooled mean (quadratic estimators)
  Mode mode;
  bool grad_x, grad_y;  // which gradients the pass accumulates (mode.grad only)
  // Gradient coefficient per slot: d(MMD^2)/d(d_ij) of one visited pair times 2 (d d_ij / d a_i =
  // 2 (a_i - b_j)), times 2 for the unordered within-domain pairs; for "linear", scale[0] = 1 / L.
  double scale[3];
  at::Tensor acc;       // float64 (3,) pair sums (mode.sum), on the device
  at::Tensor gx, gy;    // zero-initialised gradients, defined where grad_x / grad_y
};

// The device-specific passes.
struct Backend {
  // Quadratic estimators: acc[slot] += the slot's kernel sum; gx, gy += the gradients.
  void (*quadratic)(Pass& pass);
  // Linear estimator on `pairs` quadruples (x_2l, x_2l+1, y_2l, y_2l+1): acc[0] += sum_l h_l;
  // gx, gy += scale[0] * dh_l/dx, dh_l/dy.
  void (*linear)(Pass& pass, int64_t pairs);
};

// sigma2 (K,), weights (K,): per-kernel squared bandwidths and weights. Returns a 0-dim tensor.
at::Tensor forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                   const at::Tensor& weights, c10::string_view estimator, const Backend& backend);

// MMD^2 and its gradients with respect to x and y in one pass over the blocks; a gradient that is
// not asked for (grad_x / grad_y false) is not computed and returned as an empty (0,) tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_with_grad(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2, const at::Tensor& weights,
    c10::string_view estimator, bool grad_x, bool grad_y, const Backend& backend);

// Gradients of grad * MMD^2 with respect to x and y (sigma2 and weights are constants); as above
// for grad_x / grad_y.
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x,
                                            const at::Tensor& y, const at::Tensor& sigma2,
                                            const at::Tensor& weights, c10::string_view estimator,
                                            bool grad_x, bool grad_y, const Backend& backend);

// The three ops bound to one device's backend, for TORCH_LIBRARY_IMPL.
template <const Backend& kBackend>
struct BoundOps {
  static at::Tensor value(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                          const at::Tensor& weights, c10::string_view estimator) {
    return forward(x, y, sigma2, weights, estimator, kBackend);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> value_and_grad(
      const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
      const at::Tensor& weights, c10::string_view estimator, bool grad_x, bool grad_y) {
    return forward_with_grad(x, y, sigma2, weights, estimator, grad_x, grad_y, kBackend);
  }
  static std::tuple<at::Tensor, at::Tensor> grad(const at::Tensor& grad, const at::Tensor& x,
                                                 const at::Tensor& y, const at::Tensor& sigma2,
                                                 const at::Tensor& weights,
                                                 c10::string_view estimator, bool grad_x,
                                                 bool grad_y) {
    return backward(grad, x, y, sigma2, weights, estimator, grad_x, grad_y, kBackend);
  }
};

}  // namespace sim2real_fast::mmd
