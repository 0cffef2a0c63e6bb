// Device-generic part of the multi-kernel MMD (see sim2real_fast/mmd.h): argument and value
// checks, estimator coefficients, and the final combination of the pair sums.
#include "sim2real_fast/mmd.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>

#include "sim2real_fast/checks.h"
#include "sim2real_fast/mmd_math.h"

namespace sim2real_fast::mmd {

namespace {

constexpr const char* kOp = "sim2real_fast.mmd";

struct Problem {
  at::Tensor x, y;  // contiguous, detached (n, d), (m, d)
  at::Tensor c, w;  // (K,) exponent coefficients -1 / (2 sigma2) and weights, widest kernel first
  bool doubling;    // c[q] == 2 c[q - 1] exactly (see mmd_math.h)
  Estimator estimator;
  int64_t n, m;
};

// The kernels, widest first (c closest to 0), and whether their coefficients double exactly from
// one to the next. Computed on the host (the K values were read for the checks anyway; division
// is correctly rounded on both devices) and copied to x's device.
std::tuple<at::Tensor, at::Tensor, bool> ordered_kernels(const at::Tensor& sigma2, const at::Tensor& weights,
                                                         const at::Tensor& x) {
  const at::Tensor c_host = (-0.5 / sigma2.detach().to(at::kCPU)).contiguous();
  const at::Tensor order = std::get<1>(c_host.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor c_sorted = c_host.index_select(0, order).contiguous();
  bool doubling = false;
  AT_DISPATCH_FLOATING_TYPES(c_sorted.scalar_type(), "mmd_kernels", [&] {
    doubling = math::doubling_chain(c_sorted.const_data_ptr<scalar_t>(), static_cast<int>(c_sorted.numel()));
  });
  return {c_sorted.to(x.device()), weights.detach().index_select(0, order.to(weights.device())).contiguous(),
          doubling};
}

// Squared bandwidths must be positive and finite, weights finite and non-negative: anything else
// would give a silently wrong (or NaN) loss. Reads the K values (one synchronisation on CUDA).
void check_kernel_values(const at::Tensor& sigma2, const at::Tensor& weights) {
  const at::Tensor s = sigma2.detach().to(at::kCPU, at::kDouble);
  const at::Tensor w = weights.detach().to(at::kCPU, at::kDouble);
  const double* sp = s.const_data_ptr<double>();
  const double* wp = w.const_data_ptr<double>();
  for (int64_t k = 0; k < s.numel(); ++k) {
    TORCH_CHECK_VALUE(sp[k] > 0 && std::isfinite(sp[k]), kOp,
                      ": squared bandwidths must be positive and finite, got sigma2[", k, "] = ", sp[k]);
    TORCH_CHECK_VALUE(wp[k] >= 0 && std::isfinite(wp[k]), kOp,
                      ": kernel weights must be finite and non-negative, got weights[", k, "] = ", wp[k]);
  }
}

Problem prepare(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                const at::Tensor& weights, c10::string_view estimator) {
  check_feature_pair(kOp, x, y);
  TORCH_CHECK_VALUE(sigma2.dim() == 1 && sigma2.size(0) >= 1, kOp,
                    ": sigma2 must be 1-D with at least one squared bandwidth, got shape ", sigma2.sizes());
  check_vector(kOp, "sigma2", sigma2, sigma2.size(0), x);
  check_vector(kOp, "weights", weights, sigma2.size(0), x);
  const Estimator est = parse_estimator(estimator);
  const int64_t n = x.size(0), m = y.size(0);
  if (est == Estimator::kUnbiased) {
    TORCH_CHECK_VALUE(n >= 2 && m >= 2, kOp,
                      ": the unbiased estimator needs at least 2 samples in x and in y, got n=", n, ", m=", m);
  } else if (est == Estimator::kBiased) {
    TORCH_CHECK_VALUE(n >= 1 && m >= 1, kOp,
                      ": the biased estimator needs at least 1 samples in x and in y, got n=", n, ", m=", m);
  } else {
    TORCH_CHECK_VALUE(std::min(n, m) >= 2, kOp,
                      ": the linear estimator needs at least 2 samples in x and in y, got n=", n, ", m=", m);
  }
  check_kernel_values(sigma2, weights);
  auto [c, w, doubling] = ordered_kernels(sigma2, weights, x);
  return {x.detach().contiguous(), y.detach().contiguous(), c, w, doubling, est, n, m};
}

// Weights of the three pair sums in MMD^2 = a_xx S_xx + a_yy S_yy - 2 a_xy S_xy, where S_xx sums
// over ordered pairs i != j (the diagonal of the biased estimator is added analytically).
struct Coefficients {
  double xx, yy, xy;
};

Coefficients coefficients(const Problem& p) {
  const double n = static_cast<double>(p.n), m = static_cast<double>(p.m);
  if (p.estimator == Estimator::kUnbiased) return {1.0 / (n * (n - 1.0)), 1.0 / (m * (m - 1.0)), 1.0 / (n * m)};
  return {1.0 / (n * n), 1.0 / (m * m), 1.0 / (n * m)};
}

int64_t linear_pairs(const Problem& p) { return std::min(p.n, p.m) / 2; }

// Runs the estimator's pass: pair sums into a float64 (3,) tensor when mode.sum, gradients into
// fresh zero tensors where grad_x / grad_y.
Pass run_pass(const Problem& p, const Backend& backend, Mode mode, bool grad_x, bool grad_y) {
  Pass pass;
  pass.x = p.x;
  pass.y = p.y;
  pass.c = p.c;
  pass.w = p.w;
  pass.doubling = p.doubling;
  pass.mode = mode;
  pass.grad_x = mode.grad && grad_x;
  pass.grad_y = mode.grad && grad_y;
  pass.acc = at::zeros({3}, p.x.options().dtype(at::kDouble));
  if (pass.grad_x) pass.gx = at::zeros_like(p.x);
  if (pass.grad_y) pass.gy = at::zeros_like(p.y);
  if (p.estimator == Estimator::kLinear) {
    pass.scale[0] = 1.0 / static_cast<double>(linear_pairs(p));
    backend.linear(pass, linear_pairs(p));
    return pass;
  }
  pass.mean = (p.x.sum(0) + p.y.sum(0)).div_(static_cast<double>(p.n + p.m));
  // C_ij = scale * dk/dd(d_ij); within a domain each visited (unordered) pair stands for two.
  const Coefficients a = coefficients(p);
  pass.scale[kXX] = 4.0 * a.xx;
  pass.scale[kYY] = 4.0 * a.yy;
  pass.scale[kXY] = -4.0 * a.xy;
  if (mode.sum || pass.grad_x || pass.grad_y) backend.quadratic(pass);
  return pass;
}

// MMD^2 in the input dtype from the pair sums.
at::Tensor combine(const Problem& p, const at::Tensor& acc) {
  if (p.estimator == Estimator::kLinear) {
    return acc[0].div(static_cast<double>(linear_pairs(p))).to(p.x.scalar_type());
  }
  const Coefficients a = coefficients(p);
  // acc holds sums over unordered within-domain pairs: ordered sums are twice that.
  at::Tensor result = acc[kXX] * (2.0 * a.xx) + acc[kYY] * (2.0 * a.yy) - acc[kXY] * (2.0 * a.xy);
  if (p.estimator == Estimator::kBiased) {
    // The diagonal pairs (d = 0) contribute k(a, a) = sum_k w_k to each within-domain sum.
    result = result + p.w.to(at::kDouble).sum() * (p.n * a.xx + p.m * a.yy);
  }
  return result.to(p.x.scalar_type());
}

at::Tensor or_empty(const at::Tensor& t, const at::Tensor& like) {
  return t.defined() ? t : at::empty({0}, like.options());
}

}  // namespace

Estimator parse_estimator(c10::string_view estimator) {
  if (estimator == "unbiased") return Estimator::kUnbiased;
  if (estimator == "biased") return Estimator::kBiased;
  if (estimator == "linear") return Estimator::kLinear;
  TORCH_CHECK_VALUE(false, kOp, ": estimator must be 'unbiased', 'biased' or 'linear', got '",
                    std::string(estimator.data(), estimator.size()), "'");
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                   const at::Tensor& weights, c10::string_view estimator, const Backend& backend) {
  const at::NoGradGuard no_grad;
  const c10::DeviceGuard device_guard(x.device());
  const Problem p = prepare(x, y, sigma2, weights, estimator);
  const Pass pass = run_pass(p, backend, Mode{true, false}, false, false);
  return combine(p, pass.acc);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_with_grad(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2, const at::Tensor& weights,
    c10::string_view estimator, bool grad_x, bool grad_y, const Backend& backend) {
  const at::NoGradGuard no_grad;
  const c10::DeviceGuard device_guard(x.device());
  const Problem p = prepare(x, y, sigma2, weights, estimator);
  const Pass pass = run_pass(p, backend, Mode{true, true}, grad_x, grad_y);
  return {combine(p, pass.acc), or_empty(pass.gx, p.x), or_empty(pass.gy, p.y)};
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x,
                                            const at::Tensor& y, const at::Tensor& sigma2,
                                            const at::Tensor& weights, c10::string_view estimator,
                                            bool grad_x, bool grad_y, const Backend& backend) {
  const at::NoGradGuard no_grad;
  const c10::DeviceGuard device_guard(x.device());
  const Problem p = prepare(x, y, sigma2, weights, estimator);
  check_scalar_grad("sim2real_fast._mmd_backward", grad, p.x);
  Pass pass = run_pass(p, backend, Mode{false, true}, grad_x, grad_y);
  if (pass.gx.defined()) pass.gx.mul_(grad);
  if (pass.gy.defined()) pass.gy.mul_(grad);
  return {or_empty(pass.gx, p.x), or_empty(pass.gy, p.y)};
}

}  // namespace sim2real_fast::mmd
