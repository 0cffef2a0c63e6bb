// CUDA tile kernels of the multi-kernel MMD and its CUDA registration. The GEMMs of the tiled
// driver (csrc/common/mmd_tiled.cpp) run on cuBLAS through ATen; these kernels turn each block of
// dot products into kernel sums (forward) or gradient coefficients (backward) in one pass.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "sim2real_fast/mmd.h"

namespace sim2real_fast::mmd {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 4096;

template <typename T>
__device__ __forceinline__ T exp_(T v) {
  return exp(v);
}
template <>
__device__ __forceinline__ float exp_<float>(float v) {
  return expf(v);
}

// Squared distance from centred norms and a dot product; NaN passes through (no fmax).
template <typename T>
__device__ __forceinline__ T squared_distance(T norm_a, T norm_b, T dot) {
  const T d = norm_a + norm_b - T(2) * dot;
  return d < T(0) ? T(0) : d;
}

// k(d) = sum_k w_k exp(c_k d) and its slope dk/dd = sum_k w_k c_k exp(c_k d), sharing the exponentials.
template <typename T, bool kSum, bool kGrad>
__device__ __forceinline__ void kernel_terms(T d, const T* __restrict__ c, const T* __restrict__ w,
                                             int k, T& value, T& slope) {
  value = 0;
  slope = 0;
  for (int q = 0; q < k; ++q) {
    const T e = w[q] * exp_(c[q] * d);
    if constexpr (kSum) value += e;
    if constexpr (kGrad) slope += c[q] * e;
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Block-wide sum of one double per thread, written by thread 0 to partials[blockIdx.x]. The
// partials are summed by ATen afterwards: float64 results are reproducible (no atomics).
__device__ __forceinline__ void block_sum_to(double v, double* partials) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32 of them");
  __shared__ double warp_totals[kThreads / 32];
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? warp_totals[lane] : 0.0;
    v = warp_sum(v);
    if (lane == 0) partials[blockIdx.x] = v;
  }
}

// Blocks stride over the rows of the (rows, cols) tile, threads over its columns: coalesced reads
// of the dot products and of nb, one row norm per block, no index division.
template <typename T, bool kSum, bool kGrad>
__global__ void tile_kernel(T* __restrict__ dot, const T* __restrict__ na, const T* __restrict__ nb,
                            const T* __restrict__ c, const T* __restrict__ w, int k, int64_t rows,
                            int64_t cols, bool strict_upper, T scale, double* __restrict__ partials) {
  double local = 0.0;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    T* row = dot + i * cols;
    const T norm_i = na[i];
    const int64_t first = strict_upper ? i + 1 : 0;
    double row_total = 0.0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      if (j < first) {
        if constexpr (kGrad) row[j] = T(0);
        continue;
      }
      T value, slope;
      kernel_terms<T, kSum, kGrad>(squared_distance(norm_i, nb[j], row[j]), c, w, k, value, slope);
      if constexpr (kSum) row_total += value;
      if constexpr (kGrad) row[j] = scale * slope;
    }
    local += row_total;
  }
  if constexpr (kSum) block_sum_to(local, partials);
}

// One warp per pair l of the linear estimator: a = x[2l], b = x[2l+1], c = y[2l], e = y[2l+1],
// h_l = k(a, b) + k(c, e) - k(a, e) - k(b, c); d/dp k(p, q) = 2 k'(d) (p - q).
template <typename T, bool kSum, bool kGrad>
__global__ void linear_kernel(const T* __restrict__ x, const T* __restrict__ y,
                              const T* __restrict__ c, const T* __restrict__ w, int k,
                              int64_t pairs, int64_t d, T scale, double* __restrict__ partials,
                              T* __restrict__ gx, T* __restrict__ gy) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_block = blockDim.x >> 5;
  double local = 0.0;  // accumulated in lane 0
  for (int64_t l = blockIdx.x * warps_per_block + (threadIdx.x >> 5); l < pairs;
       l += int64_t{gridDim.x} * warps_per_block) {
    const T *a = x + 2 * l * d, *b = a + d, *cc = y + 2 * l * d, *e = cc + d;
    T ab = 0, ce = 0, ae = 0, bc = 0;
    for (int64_t f = lane; f < d; f += 32) {
      const T va = a[f], vb = b[f], vc = cc[f], ve = e[f];
      ab += (va - vb) * (va - vb);
      ce += (vc - ve) * (vc - ve);
      ae += (va - ve) * (va - ve);
      bc += (vb - vc) * (vb - vc);
    }
    T v_ab, v_ce, v_ae, v_bc, s_ab, s_ce, s_ae, s_bc;
    kernel_terms<T, kSum, kGrad>(warp_sum(ab), c, w, k, v_ab, s_ab);
    kernel_terms<T, kSum, kGrad>(warp_sum(ce), c, w, k, v_ce, s_ce);
    kernel_terms<T, kSum, kGrad>(warp_sum(ae), c, w, k, v_ae, s_ae);
    kernel_terms<T, kSum, kGrad>(warp_sum(bc), c, w, k, v_bc, s_bc);
    if constexpr (kSum) {
      if (lane == 0) local += static_cast<double>(v_ab) + v_ce - v_ae - v_bc;
    }
    if constexpr (kGrad) {
      s_ab *= T(2) * scale, s_ce *= T(2) * scale, s_ae *= T(2) * scale, s_bc *= T(2) * scale;
      T *ga = gx + 2 * l * d, *gb = ga + d, *gc = gy + 2 * l * d, *ge = gc + d;
      for (int64_t f = lane; f < d; f += 32) {
        const T va = a[f], vb = b[f], vc = cc[f], ve = e[f];
        ga[f] = s_ab * (va - vb) - s_ae * (va - ve);
        gb[f] = s_ab * (vb - va) - s_bc * (vb - vc);
        gc[f] = s_ce * (vc - ve) - s_bc * (vc - vb);
        ge[f] = s_ce * (ve - vc) - s_ae * (ve - va);
      }
    }
  }
  if constexpr (kSum) block_sum_to(local, partials);
}

// One float64 partial sum per block when summing, added to acc[slot] on the device.
at::Tensor block_partials(Mode mode, int blocks, const at::Tensor& acc) {
  return mode.sum ? at::empty({blocks}, acc.options()) : at::Tensor();
}

void tile(at::Tensor& dot, const at::Tensor& na, const at::Tensor& nb, const at::Tensor& c,
          const at::Tensor& w, bool strict_upper, Mode mode, double scale, at::Tensor& acc,
          int64_t slot) {
  if (dot.numel() == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(dot.size(0), kMaxBlocks));
  at::Tensor partials = block_partials(mode, blocks, acc);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dot.scalar_type(), "mmd_tile_cuda", [&] {
    with_mode(mode, [&]<bool kSum, bool kGrad>() {
      tile_kernel<scalar_t, kSum, kGrad><<<blocks, kThreads, 0, stream>>>(
          dot.mutable_data_ptr<scalar_t>(), na.const_data_ptr<scalar_t>(), nb.const_data_ptr<scalar_t>(),
          c.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), static_cast<int>(c.size(0)),
          dot.size(0), dot.size(1), strict_upper, static_cast<scalar_t>(scale),
          kSum ? partials.mutable_data_ptr<double>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  if (mode.sum) acc.narrow(0, slot, 1).add_(partials.sum());
}

void linear(const at::Tensor& x, const at::Tensor& y, const at::Tensor& c, const at::Tensor& w,
            int64_t pairs, Mode mode, double scale, at::Tensor& acc, at::Tensor& gx, at::Tensor& gy) {
  if (pairs == 0) return;
  constexpr int64_t kWarpsPerBlock = kThreads / 32;
  const int blocks = static_cast<int>(std::min<int64_t>((pairs + kWarpsPerBlock - 1) / kWarpsPerBlock, kMaxBlocks));
  at::Tensor partials = block_partials(mode, blocks, acc);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmd_linear_cuda", [&] {
    with_mode(mode, [&]<bool kSum, bool kGrad>() {
      linear_kernel<scalar_t, kSum, kGrad><<<blocks, kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
          w.const_data_ptr<scalar_t>(), static_cast<int>(c.size(0)), pairs, x.size(1),
          static_cast<scalar_t>(scale), kSum ? partials.mutable_data_ptr<double>() : nullptr,
          kGrad ? gx.mutable_data_ptr<scalar_t>() : nullptr, kGrad ? gy.mutable_data_ptr<scalar_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  if (mode.sum) acc.narrow(0, 0, 1).add_(partials.sum());
}

// 4096 x 4096 blocks: 64 MiB of float32 scratch, large enough for cuBLAS to run near peak.
constexpr Backend kCudaBackend{4096, tile, linear};

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CUDA, m) {
  using Ops = BoundOps<kCudaBackend>;
  m.impl("mmd", &Ops::value);
  m.impl("_mmd_with_grad", &Ops::value_and_grad);
  m.impl("_mmd_backward", &Ops::grad);
}

}  // namespace sim2real_fast::mmd
