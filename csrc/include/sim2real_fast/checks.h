// Argument checks shared by every op. One message style everywhere (the Python wrappers check
// nothing the op checks): "sim2real_fast.<op>: <argument> must <what>, got <what was given>", as
// ValueError (shape, size, device, value), TypeError (dtype) or IndexError (an index out of range).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string_view>

namespace sim2real_fast {

// x: (n, d) floating tensor; y: (m, d) with the same d, dtype and device as x.
inline void check_feature_pair(const char* op, const at::Tensor& x, const at::Tensor& y) {
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be 2-D (n, d), got shape ", x.sizes());
  TORCH_CHECK_VALUE(y.dim() == 2, op, ": y must be 2-D (m, d), got shape ", y.sizes());
  TORCH_CHECK_VALUE(x.size(1) == y.size(1), op, ": x and y must have the same feature size d, got x ",
                    x.sizes(), " and y ", y.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                   ": x must be a floating-point tensor (float32 or float64), got ", x.scalar_type());
  TORCH_CHECK_TYPE(y.scalar_type() == x.scalar_type(), op, ": x and y must have the same dtype, got x ",
                   x.scalar_type(), " and y ", y.scalar_type());
  TORCH_CHECK_VALUE(y.device() == x.device(), op, ": x and y must be on the same device, got x on ",
                    x.device(), " and y on ", y.device());
}

// A 1-D tensor of `k` entries with the dtype and device of `like`.
inline void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t k,
                         const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == k, op, ": ", name, " must be 1-D of size ", k,
                    ", got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have dtype ",
                   like.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " must be on ", like.device(),
                    ", got ", t.device());
}

// A 0-dim gradient tensor with the dtype and device of `like`.
inline void check_scalar_grad(const char* op, const at::Tensor& grad, const at::Tensor& like) {
  TORCH_CHECK_VALUE(grad.dim() == 0, op, ": grad must be a scalar (0-dim) tensor, got shape ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == like.scalar_type() && grad.device() == like.device(), op,
              ": grad must be ", like.scalar_type(), " on ", like.device(), ", got ",
              grad.scalar_type(), " on ", grad.device());
}

}  // namespace sim2real_fast
