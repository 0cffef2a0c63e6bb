// CPU centring kernel of Deep CORAL (rows shared out by at::parallel_for) and its CPU registration.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "sim2real_fast/coral.h"

namespace sim2real_fast::coral {
namespace {

template <typename T>
void centre_impl(const T* src, const T* mean, T scale, int64_t rows, int64_t d, T* out) {
  at::parallel_for(0, rows, std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(d, 1)),
                   [&](int64_t first, int64_t last) {
                     for (int64_t i = first; i < last; ++i) {
                       const T* s = src + i * d;
                       T* o = out + i * d;
#pragma omp simd
                       for (int64_t f = 0; f < d; ++f) o[f] = (s[f] - mean[f]) * scale;
                     }
                   });
}

void centre(const at::Tensor& src, const at::Tensor& mean, double scale, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "coral_centre_cpu", [&] {
    centre_impl<scalar_t>(src.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
                          static_cast<scalar_t>(scale), src.size(0), src.size(1),
                          out.mutable_data_ptr<scalar_t>());
  });
}

constexpr Backend kCpuBackend{centre};

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CPU, m) {
  using Ops = BoundOps<kCpuBackend>;
  m.impl("coral", &Ops::value);
  m.impl("_coral_backward", &Ops::grad);
}

}  // namespace sim2real_fast::coral
