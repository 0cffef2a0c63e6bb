// Device-generic chunked driver of the Deep CORAL loss (see sim2real_fast/coral.h).
#include "sim2real_fast/coral.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <cmath>

#include "sim2real_fast/checks.h"

namespace sim2real_fast::coral {
namespace {

constexpr const char* kOp = "sim2real_fast.coral";
// Rows per chunk: about 4 Mi elements of scratch (16 MiB in float32), at least 64 rows.
constexpr int64_t kChunkElements = int64_t{1} << 22;

void check_inputs(const at::Tensor& x, const at::Tensor& y) {
  check_feature_pair(kOp, x, y);
  TORCH_CHECK_VALUE(x.size(1) >= 1, kOp, ": x and y must have at least one feature (d >= 1), got x ", x.sizes());
  TORCH_CHECK_VALUE(x.size(0) >= 2 && y.size(0) >= 2, kOp,
                    ": a covariance needs at least 2 samples in x and in y, got n=", x.size(0), ", m=", y.size(0));
}

// Calls fn(start, rows, centred_scaled_chunk) over row chunks of `src`.
template <typename Fn>
void for_each_centred_chunk(const at::Tensor& src, double scale, const Backend& backend, Fn&& fn) {
  const int64_t n = src.size(0), d = src.size(1);
  const int64_t chunk = std::min(n, std::max<int64_t>(64, kChunkElements / d));
  const at::Tensor mean = src.mean(0);
  at::Tensor scratch = at::empty({chunk * d}, src.options());
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t rows = std::min(chunk, n - start);
    at::Tensor out = scratch.narrow(0, 0, rows * d).view({rows, d});
    backend.centre(src.narrow(0, start, rows), mean, scale, out);
    fn(start, rows, out);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x_in, const at::Tensor& y_in,
                                           const Backend& backend) {
  const at::NoGradGuard no_grad;
  const c10::DeviceGuard device_guard(x_in.device());
  check_inputs(x_in, y_in);
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  const int64_t d = x.size(1);
  at::Tensor cov_diff = at::zeros({d, d}, x.options());
  // C_x = Xc^T Xc / (n - 1): centre and scale by 1 / sqrt(n - 1), then one GEMM per chunk.
  for_each_centred_chunk(x, 1.0 / std::sqrt(x.size(0) - 1.0), backend,
                         [&](int64_t, int64_t, const at::Tensor& c) { cov_diff.addmm_(c.t(), c); });
  for_each_centred_chunk(y, 1.0 / std::sqrt(y.size(0) - 1.0), backend,
                         [&](int64_t, int64_t, const at::Tensor& c) {
                           cov_diff.addmm_(c.t(), c, 1.0, -1.0);
                         });
  // ||C_x - C_y||_F^2 accumulated in float64, a block of rows at a time (no d x d temporary).
  at::Tensor sum_sq = at::zeros({}, x.options().dtype(at::kDouble));
  const int64_t rows = std::max<int64_t>(1, kChunkElements / (4 * d));
  for (int64_t start = 0; start < d; start += rows) {
    const at::Tensor block = cov_diff.narrow(0, start, std::min(rows, d - start)).to(at::kDouble).view({-1});
    sum_sq.add_(at::dot(block, block));
  }
  at::Tensor loss = sum_sq.div_(4.0 * static_cast<double>(d) * static_cast<double>(d)).to(x.scalar_type());
  return {loss, cov_diff};
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& g_in, const at::Tensor& x_in,
                                            const at::Tensor& y_in, const Backend& backend) {
  const at::NoGradGuard no_grad;
  const c10::DeviceGuard device_guard(x_in.device());
  check_inputs(x_in, y_in);
  const int64_t d = x_in.size(1);
  TORCH_CHECK_VALUE(g_in.dim() == 2 && g_in.size(0) == d && g_in.size(1) == d, "sim2real_fast._coral_backward",
                    ": g must be (d, d) = (", d, ", ", d, "), got ", g_in.sizes());
  TORCH_CHECK_TYPE(g_in.scalar_type() == x_in.scalar_type() && g_in.device() == x_in.device(),
                   "sim2real_fast._coral_backward: g must be ", x_in.scalar_type(), " on ", x_in.device(), ", got ",
                   g_in.scalar_type(), " on ", g_in.device());
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous(), g = g_in.contiguous();
  at::Tensor gx = at::empty_like(x), gy = at::empty_like(y);
  // Centring of x feeds the covariance only, and (x - mean) G has zero column means already,
  // so the centring's Jacobian leaves the gradient unchanged.
  for_each_centred_chunk(x, 2.0 / (x.size(0) - 1.0), backend,
                         [&](int64_t start, int64_t rows, const at::Tensor& c) {
                           at::Tensor out = gx.narrow(0, start, rows);
                           at::mm_out(out, c, g);
                         });
  for_each_centred_chunk(y, -2.0 / (y.size(0) - 1.0), backend,
                         [&](int64_t start, int64_t rows, const at::Tensor& c) {
                           at::Tensor out = gy.narrow(0, start, rows);
                           at::mm_out(out, c, g);
                         });
  return {gx, gy};
}

}  // namespace sim2real_fast::coral
