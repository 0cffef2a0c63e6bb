// Device-generic driver of the tiled multi-kernel MMD (see sim2real_fast/mmd.h).
#include "sim2real_fast/mmd.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>

#include "sim2real_fast/checks.h"

namespace sim2real_fast::mmd {

namespace {

constexpr const char* kOp = "sim2real_fast::mmd";

struct Problem {
  at::Tensor x, y;  // contiguous (n, d), (m, d)
  at::Tensor c, w;  // (K,) exponent coefficients -1 / (2 sigma2) and weights
  Estimator estimator;
  int64_t n, m;
};

Problem prepare(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                const at::Tensor& weights, c10::string_view estimator) {
  check_feature_pair(kOp, x, y);
  TORCH_CHECK(sigma2.dim() == 1 && sigma2.size(0) >= 1, kOp,
              ": sigma2 must be 1-D with at least one squared bandwidth, got shape ", sigma2.sizes());
  check_vector(kOp, "sigma2", sigma2, sigma2.size(0), x);
  check_vector(kOp, "weights", weights, sigma2.size(0), x);
  Problem p{x.contiguous(), y.contiguous(), (-0.5 / sigma2).contiguous(), weights.contiguous(),
            parse_estimator(estimator), x.size(0), y.size(0)};
  if (p.estimator == Estimator::kUnbiased) {
    TORCH_CHECK(p.n >= 2 && p.m >= 2, kOp,
                ": the unbiased estimator needs at least 2 samples in x and in y, got n=", p.n,
                ", m=", p.m);
  } else if (p.estimator == Estimator::kBiased) {
    TORCH_CHECK(p.n >= 1 && p.m >= 1, kOp,
                ": the biased estimator needs at least 1 sample in x and in y, got n=", p.n,
                ", m=", p.m);
  } else {
    TORCH_CHECK(std::min(p.n, p.m) >= 2, kOp,
                ": the linear estimator needs min(n, m) >= 2, got n=", p.n, ", m=", p.m);
  }
  return p;
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

// Rows [start, start + rows) of `src`, minus `mean`, written into a scratch buffer, plus their
// squared norms. Returns (block (rows, d), norms (rows,)).
std::tuple<at::Tensor, at::Tensor> centred_block(const at::Tensor& src, int64_t start, int64_t rows,
                                                 const at::Tensor& mean, at::Tensor& scratch) {
  const int64_t d = src.size(1);
  at::Tensor block = scratch.narrow(0, 0, rows * d).view({rows, d});
  at::sub_out(block, src.narrow(0, start, rows), mean);
  at::Tensor norms = block.square().sum(1);
  return {block, norms};
}

// Visits every block of the pair matrix a x b; `within` means a == b and only blocks on and above
// the diagonal are visited (their diagonal blocks are strict_upper). fn(i0, A, na, j0, B, nb, dot,
// strict_upper) receives centred blocks and their dot products A B^T.
template <typename Fn>
void for_each_block(const at::Tensor& a, const at::Tensor& b, bool within, const at::Tensor& mean,
                    int64_t tile, Fn&& fn) {
  const int64_t na_rows = a.size(0), nb_rows = b.size(0), d = a.size(1);
  const int64_t ta = std::min(tile, na_rows), tb = std::min(tile, nb_rows);
  at::Tensor scratch_a = at::empty({std::max<int64_t>(ta * d, 1)}, a.options());
  at::Tensor scratch_b = at::empty({std::max<int64_t>(tb * d, 1)}, a.options());
  at::Tensor scratch_dot = at::empty({ta * tb}, a.options());
  for (int64_t i0 = 0; i0 < na_rows; i0 += ta) {
    const int64_t ri = std::min(ta, na_rows - i0);
    auto [A, norm_a] = centred_block(a, i0, ri, mean, scratch_a);
    for (int64_t j0 = within ? i0 : 0; j0 < nb_rows; j0 += tb) {
      const int64_t rj = std::min(tb, nb_rows - j0);
      const bool diagonal = within && j0 == i0;
      at::Tensor B = A, norm_b = norm_a;
      if (!diagonal) std::tie(B, norm_b) = centred_block(b, j0, rj, mean, scratch_b);
      at::Tensor dot = scratch_dot.narrow(0, 0, ri * rj).view({ri, rj});
      at::mm_out(dot, A, B.t());
      fn(i0, A, norm_a, j0, B, norm_b, dot, diagonal);
    }
  }
}

at::Tensor pooled_mean(const Problem& p) {
  return (p.x.sum(0) + p.y.sum(0)).div_(static_cast<double>(p.n + p.m));
}

int64_t linear_pairs(const Problem& p) { return std::min(p.n, p.m) / 2; }

// One pass of the estimator: acc (float64 (3,)) gets the pair sums when mode.sum; gx and gy
// (zero-initialised) get the gradients of MMD^2 when mode.grad.
void run_pass(const Problem& p, const Backend& backend, Mode mode, at::Tensor& acc, at::Tensor& gx,
              at::Tensor& gy) {
  if (p.estimator == Estimator::kLinear) {
    backend.linear(p.x, p.y, p.c, p.w, linear_pairs(p), mode,
                   1.0 / static_cast<double>(linear_pairs(p)), acc, gx, gy);
    return;
  }
  const at::Tensor mean = pooled_mean(p);
  const Coefficients a = coefficients(p);
  // With C_ij = scale * dk/dd(d_ij) and d_ij = ||a_i - b_j||^2, the pair's gradient is
  // 2 C_ij (a_i - b_j) for a_i and 2 C_ij (b_j - a_i) for b_j; the 2 is folded into the scale.
  auto visit = [&](int64_t slot, at::Tensor& ga, at::Tensor& gb, double scale) {
    return [&, slot, scale](int64_t i0, const at::Tensor& A, const at::Tensor& na, int64_t j0,
                            const at::Tensor& B, const at::Tensor& nb, at::Tensor& dot,
                            bool strict_upper) {
      backend.tile(dot, na, nb, p.c, p.w, strict_upper, mode, scale, acc, slot);
      if (!mode.grad) return;
      at::Tensor ga_rows = ga.narrow(0, i0, A.size(0));
      ga_rows.addcmul_(dot.sum({1}, true), A).addmm_(dot, B, 1.0, -1.0);
      at::Tensor gb_rows = gb.narrow(0, j0, B.size(0));
      gb_rows.addcmul_(dot.sum({0}).unsqueeze(1), B).addmm_(dot.t(), A, 1.0, -1.0);
    };
  };
  // Within a domain only unordered pairs are visited; each stands for two ordered pairs: 2 * 2 a_xx.
  for_each_block(p.x, p.x, /*within=*/true, mean, backend.tile_rows, visit(0, gx, gx, 4.0 * a.xx));
  for_each_block(p.y, p.y, /*within=*/true, mean, backend.tile_rows, visit(1, gy, gy, 4.0 * a.yy));
  for_each_block(p.x, p.y, /*within=*/false, mean, backend.tile_rows, visit(2, gx, gy, -4.0 * a.xy));
}

// MMD^2 in the input dtype from the pair sums of run_pass.
at::Tensor combine(const Problem& p, const at::Tensor& acc) {
  if (p.estimator == Estimator::kLinear) {
    return acc[0].div(static_cast<double>(linear_pairs(p))).to(p.x.scalar_type());
  }
  const Coefficients a = coefficients(p);
  // acc holds sums over unordered within-domain pairs: ordered sums are twice that.
  at::Tensor result = acc[0] * (2.0 * a.xx) + acc[1] * (2.0 * a.yy) - acc[2] * (2.0 * a.xy);
  if (p.estimator == Estimator::kBiased) {
    // The diagonal pairs (d = 0) contribute k(a, a) = sum_k w_k to each within-domain sum.
    result = result + p.w.to(at::kDouble).sum() * (p.n * a.xx + p.m * a.yy);
  }
  return result.to(p.x.scalar_type());
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
  at::Tensor acc = at::zeros({3}, p.x.options().dtype(at::kDouble));
  at::Tensor no_gx, no_gy;
  run_pass(p, backend, Mode{true, false}, acc, no_gx, no_gy);
  return combine(p, acc);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_with_grad(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2, const at::Tensor& weights,
    c10::string_view estimator, const Backend& backend) {
  const at::NoGradGuard no_grad;
  const c10::DeviceGuard device_guard(x.device());
  const Problem p = prepare(x, y, sigma2, weights, estimator);
  at::Tensor acc = at::zeros({3}, p.x.options().dtype(at::kDouble));
  at::Tensor gx = at::zeros_like(p.x), gy = at::zeros_like(p.y);
  run_pass(p, backend, Mode{true, true}, acc, gx, gy);
  return {combine(p, acc), gx, gy};
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x,
                                            const at::Tensor& y, const at::Tensor& sigma2,
                                            const at::Tensor& weights, c10::string_view estimator,
                                            const Backend& backend) {
  const at::NoGradGuard no_grad;
  const c10::DeviceGuard device_guard(x.device());
  const Problem p = prepare(x, y, sigma2, weights, estimator);
  check_scalar_grad("sim2real_fast::_mmd_backward", grad, p.x);
  at::Tensor no_acc, gx = at::zeros_like(p.x), gy = at::zeros_like(p.y);
  run_pass(p, backend, Mode{false, true}, no_acc, gx, gy);
  gx.mul_(grad);
  gy.mul_(grad);
  return {gx, gy};
}

}  // namespace sim2real_fast::mmd
