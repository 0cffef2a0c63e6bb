// CUDA tile kernels of the multi-kernel MMD and its CUDA registration. The GEMMs of the tiled
// driver (csrc/common/mmd_tiled.cpp) run on cuBLAS through ATen; these kernels turn each block of
// dot products into kernel sums (forward) or gradient coefficients (backward) in one pass.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "sim2real_fast/mmd.h"

namespace sim2real_fast::mmd {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 4096;

int blocks_for_rows(int64_t rows) { return static_cast<int>(std::min<int64_t>(rows, kMaxBlocks)); }

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

template <typename T>
__device__ __forceinline__ T kernel_value(T d, const T* __restrict__ c, const T* __restrict__ w, int k) {
  T v = 0;
  for (int q = 0; q < k; ++q) v += w[q] * exp_(c[q] * d);
  return v;
}

template <typename T>
__device__ __forceinline__ T kernel_slope(T d, const T* __restrict__ c, const T* __restrict__ w, int k) {
  T v = 0;
  for (int q = 0; q < k; ++q) v += w[q] * c[q] * exp_(c[q] * d);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Block-wide sum of one double per thread, added atomically to *out by thread 0.
__device__ __forceinline__ void block_sum_to(double v, double* out) {
  __shared__ double warp_totals[kThreads / 32];
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? warp_totals[lane] : 0.0;
    v = warp_sum(v);
    if (lane == 0) atomicAdd(out, v);
  }
}

// Blocks stride over the rows of the (rows, cols) tile, threads over its columns: coalesced reads
// of the dot products and of nb, one row norm per block, no index division.
template <typename T>
__global__ void tile_sum_kernel(const T* __restrict__ dot, const T* __restrict__ na,
                                const T* __restrict__ nb, const T* __restrict__ c,
                                const T* __restrict__ w, int k, int64_t rows, int64_t cols,
                                bool strict_upper, double* __restrict__ out) {
  double local = 0.0;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const T* row = dot + i * cols;
    const T norm_i = na[i];
    T row_total = 0;
    for (int64_t j = (strict_upper ? i + 1 : 0) + threadIdx.x; j < cols; j += blockDim.x) {
      row_total += kernel_value(squared_distance(norm_i, nb[j], row[j]), c, w, k);
    }
    local += row_total;
  }
  block_sum_to(local, out);
}

template <typename T>
__global__ void tile_grad_kernel(T* __restrict__ dot, const T* __restrict__ na,
                                 const T* __restrict__ nb, const T* __restrict__ c,
                                 const T* __restrict__ w, int k, int64_t rows, int64_t cols,
                                 bool strict_upper, T scale) {
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    T* row = dot + i * cols;
    const T norm_i = na[i];
    const int64_t first = strict_upper ? i + 1 : 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      row[j] = j < first ? T(0) : scale * kernel_slope(squared_distance(norm_i, nb[j], row[j]), c, w, k);
    }
  }
}

// One warp per pair l of the linear estimator: a = x[2l], b = x[2l+1], c = y[2l], e = y[2l+1].
// Returns the four squared distances (ab, ce, ae, bc), reduced across the warp.
template <typename T>
__device__ __forceinline__ void pair_distances(const T* a, const T* b, const T* cc, const T* e,
                                               int64_t d, int lane, T out[4]) {
  T ab = 0, ce = 0, ae = 0, bc = 0;
  for (int64_t f = lane; f < d; f += 32) {
    const T va = a[f], vb = b[f], vc = cc[f], ve = e[f];
    ab += (va - vb) * (va - vb);
    ce += (vc - ve) * (vc - ve);
    ae += (va - ve) * (va - ve);
    bc += (vb - vc) * (vb - vc);
  }
  out[0] = warp_sum(ab);
  out[1] = warp_sum(ce);
  out[2] = warp_sum(ae);
  out[3] = warp_sum(bc);
}

template <typename T>
__global__ void linear_sum_kernel(const T* __restrict__ x, const T* __restrict__ y,
                                  const T* __restrict__ c, const T* __restrict__ w, int k,
                                  int64_t pairs, int64_t d, double* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_block = blockDim.x >> 5;
  double local = 0.0;  // meaningful in lane 0 only
  for (int64_t l = blockIdx.x * warps_per_block + (threadIdx.x >> 5); l < pairs;
       l += int64_t{gridDim.x} * warps_per_block) {
    const T *a = x + 2 * l * d, *b = a + d, *cc = y + 2 * l * d, *e = cc + d;
    T dist[4];
    pair_distances(a, b, cc, e, d, lane, dist);
    if (lane == 0) {
      local += static_cast<double>(kernel_value(dist[0], c, w, k)) + kernel_value(dist[1], c, w, k) -
               kernel_value(dist[2], c, w, k) - kernel_value(dist[3], c, w, k);
    }
  }
  block_sum_to(local, out);
}

template <typename T>
__global__ void linear_grad_kernel(const T* __restrict__ x, const T* __restrict__ y,
                                   const T* __restrict__ c, const T* __restrict__ w, int k,
                                   int64_t pairs, int64_t d, T scale, T* __restrict__ gx,
                                   T* __restrict__ gy) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_block = blockDim.x >> 5;
  for (int64_t l = blockIdx.x * warps_per_block + (threadIdx.x >> 5); l < pairs;
       l += int64_t{gridDim.x} * warps_per_block) {
    const T *a = x + 2 * l * d, *b = a + d, *cc = y + 2 * l * d, *e = cc + d;
    T *ga = gx + 2 * l * d, *gb = ga + d, *gc = gy + 2 * l * d, *ge = gc + d;
    T dist[4];
    pair_distances(a, b, cc, e, d, lane, dist);
    // d/dp k(p, q) = 2 k'(d) (p - q)
    const T s_ab = T(2) * scale * kernel_slope(dist[0], c, w, k);
    const T s_ce = T(2) * scale * kernel_slope(dist[1], c, w, k);
    const T s_ae = T(2) * scale * kernel_slope(dist[2], c, w, k);
    const T s_bc = T(2) * scale * kernel_slope(dist[3], c, w, k);
    for (int64_t f = lane; f < d; f += 32) {
      const T va = a[f], vb = b[f], vc = cc[f], ve = e[f];
      ga[f] = s_ab * (va - vb) - s_ae * (va - ve);
      gb[f] = s_ab * (vb - va) - s_bc * (vb - vc);
      gc[f] = s_ce * (vc - ve) - s_bc * (vc - vb);
      ge[f] = s_ce * (ve - vc) - s_ae * (ve - va);
    }
  }
}

void tile_sum(const at::Tensor& dot, const at::Tensor& na, const at::Tensor& nb,
              const at::Tensor& c, const at::Tensor& w, bool strict_upper, at::Tensor& acc,
              int64_t slot) {
  if (dot.numel() == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dot.scalar_type(), "mmd_tile_sum_cuda", [&] {
    tile_sum_kernel<scalar_t><<<blocks_for_rows(dot.size(0)), kThreads, 0, stream>>>(
        dot.const_data_ptr<scalar_t>(), na.const_data_ptr<scalar_t>(), nb.const_data_ptr<scalar_t>(),
        c.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), static_cast<int>(c.size(0)),
        dot.size(0), dot.size(1), strict_upper, acc.mutable_data_ptr<double>() + slot);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void tile_grad(at::Tensor& dot, const at::Tensor& na, const at::Tensor& nb, const at::Tensor& c,
               const at::Tensor& w, bool strict_upper, double scale) {
  if (dot.numel() == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dot.scalar_type(), "mmd_tile_grad_cuda", [&] {
    tile_grad_kernel<scalar_t><<<blocks_for_rows(dot.size(0)), kThreads, 0, stream>>>(
        dot.mutable_data_ptr<scalar_t>(), na.const_data_ptr<scalar_t>(), nb.const_data_ptr<scalar_t>(),
        c.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), static_cast<int>(c.size(0)),
        dot.size(0), dot.size(1), strict_upper, static_cast<scalar_t>(scale));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

int blocks_for_pairs(int64_t pairs) {
  const int64_t warps_per_block = kThreads / 32;
  return static_cast<int>(std::min<int64_t>((pairs + warps_per_block - 1) / warps_per_block, kMaxBlocks));
}

void linear_sum(const at::Tensor& x, const at::Tensor& y, const at::Tensor& c,
                const at::Tensor& w, int64_t pairs, at::Tensor& acc) {
  if (pairs == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmd_linear_sum_cuda", [&] {
    linear_sum_kernel<scalar_t><<<blocks_for_pairs(pairs), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
        w.const_data_ptr<scalar_t>(), static_cast<int>(c.size(0)), pairs, x.size(1),
        acc.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void linear_grad(const at::Tensor& x, const at::Tensor& y, const at::Tensor& c,
                 const at::Tensor& w, int64_t pairs, double scale, at::Tensor& gx, at::Tensor& gy) {
  if (pairs == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmd_linear_grad_cuda", [&] {
    linear_grad_kernel<scalar_t><<<blocks_for_pairs(pairs), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
        w.const_data_ptr<scalar_t>(), static_cast<int>(c.size(0)), pairs, x.size(1),
        static_cast<scalar_t>(scale), gx.mutable_data_ptr<scalar_t>(), gy.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// 4096 x 4096 blocks: 64 MiB of float32 scratch, large enough for cuBLAS to run near peak.
constexpr Backend kCudaBackend{4096, tile_sum, tile_grad, linear_sum, linear_grad};

at::Tensor mmd_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& sigma2,
                    const at::Tensor& weights, c10::string_view estimator) {
  const c10::cuda::CUDAGuard guard(x.device());
  return forward(x, y, sigma2, weights, std::string_view(estimator.data(), estimator.size()),
                 kCudaBackend);
}

std::tuple<at::Tensor, at::Tensor> mmd_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                     const at::Tensor& y, const at::Tensor& sigma2,
                                                     const at::Tensor& weights,
                                                     c10::string_view estimator) {
  const c10::cuda::CUDAGuard guard(x.device());
  return backward(grad, x, y, sigma2, weights,
                  std::string_view(estimator.data(), estimator.size()), kCudaBackend);
}

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CUDA, m) {
  m.impl("mmd", &mmd_cuda);
  m.impl("_mmd_backward", &mmd_backward_cuda);
}

}  // namespace sim2real_fast::mmd
