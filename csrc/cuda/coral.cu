// CUDA centring kernel of Deep CORAL and its CUDA registration. The covariance GEMMs of the
// chunked driver (csrc/common/coral_chunked.cpp) run on cuBLAS through ATen.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "sim2real_fast/coral.h"

namespace sim2real_fast::coral {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 4096;

template <typename T>
__global__ void centre_kernel(const T* __restrict__ src, const T* __restrict__ mean, T scale,
                              int64_t total, int64_t d, T* __restrict__ out) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    out[idx] = (src[idx] - mean[idx % d]) * scale;
  }
}

void centre(const at::Tensor& src, const at::Tensor& mean, double scale, at::Tensor& out) {
  const int64_t total = src.numel();
  if (total == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks));
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "coral_centre_cuda", [&] {
    centre_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        src.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(), static_cast<scalar_t>(scale),
        total, src.size(1), out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

constexpr Backend kCudaBackend{centre};

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CUDA, m) {
  using Ops = BoundOps<kCudaBackend>;
  m.impl("coral", &Ops::value);
  m.impl("_coral_backward", &Ops::grad);
}

}  // namespace sim2real_fast::coral
