// CUDA passes of the multi-kernel MMD and its CUDA registration. The blocks of the pair matrix
// are walked in order on the current stream; their GEMMs run on cuBLAS through ATen, and the tile
// kernel turns each block of dot products into kernel sums and/or gradient coefficients in one
// pass (element math: sim2real_fast/mmd_math.h). GEMMs that apply coefficients to a side whose
// gradient is not needed are skipped.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/addcmul.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "sim2real_fast/mmd.h"
#include "sim2real_fast/mmd_math.h"

namespace sim2real_fast::mmd {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 4096;
// 4096 x 4096 blocks: 64 MiB of float32 scratch, large enough for cuBLAS to run near peak.
constexpr int64_t kTile = 4096;

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
                            const T* __restrict__ c, const T* __restrict__ w, int k, bool doubling,
                            int64_t rows, int64_t cols, bool strict_upper, T scale,
                            double* __restrict__ partials) {
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
      math::kernel_terms<kSum, kGrad>(math::squared_distance(norm_i, nb[j], row[j]), c, w, k, doubling, value,
                                      slope);
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
                              const T* __restrict__ c, const T* __restrict__ w, int k, bool doubling,
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
    const auto t = math::linear_terms<kSum, kGrad>(warp_sum(ab), warp_sum(ce), warp_sum(ae), warp_sum(bc), c, w,
                                                   k, doubling, scale);
    if constexpr (kSum) {
      if (lane == 0) local += static_cast<double>(t.h);
    }
    if constexpr (kGrad) {
      for (int64_t f = lane; f < d; f += 32) {
        const T va = a[f], vb = b[f], vc = cc[f], ve = e[f];
        if (gx != nullptr) {
          gx[2 * l * d + f] = t.s_ab * (va - vb) - t.s_aq * (va - ve);
          gx[(2 * l + 1) * d + f] = t.s_ab * (vb - va) - t.s_bp * (vb - vc);
        }
        if (gy != nullptr) {
          gy[2 * l * d + f] = t.s_pq * (vc - ve) - t.s_bp * (vc - vb);
          gy[(2 * l + 1) * d + f] = t.s_pq * (ve - vc) - t.s_aq * (ve - va);
        }
      }
    }
  }
  if constexpr (kSum) block_sum_to(local, partials);
}

// One float64 partial sum per block when summing, added to acc[slot] on the device.
at::Tensor block_partials(Mode mode, int blocks, const at::Tensor& acc) {
  return mode.sum ? at::empty({blocks}, acc.options()) : at::Tensor();
}

void tile(at::Tensor& dot, const at::Tensor& na, const at::Tensor& nb, const Pass& pass, bool strict_upper,
          Mode mode, double scale, int64_t slot) {
  if (dot.numel() == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(dot.size(0), kMaxBlocks));
  at::Tensor partials = block_partials(mode, blocks, pass.acc);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dot.scalar_type(), "mmd_tile_cuda", [&] {
    with_mode(mode, [&]<bool kSum, bool kGrad>() {
      tile_kernel<scalar_t, kSum, kGrad><<<blocks, kThreads, 0, stream>>>(
          dot.mutable_data_ptr<scalar_t>(), na.const_data_ptr<scalar_t>(), nb.const_data_ptr<scalar_t>(),
          pass.c.const_data_ptr<scalar_t>(), pass.w.const_data_ptr<scalar_t>(), static_cast<int>(pass.c.size(0)),
          pass.doubling, dot.size(0), dot.size(1), strict_upper, static_cast<scalar_t>(scale),
          kSum ? partials.mutable_data_ptr<double>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  if (mode.sum) pass.acc.narrow(0, slot, 1).add_(partials.sum());
}

// Rows [start, start + rows) of `src` minus `mean`, written into a scratch buffer, plus their
// squared norms. Returns (block (rows, d), norms (rows,)).
std::tuple<at::Tensor, at::Tensor> centred_block(const at::Tensor& src, int64_t start, int64_t rows,
                                                 const at::Tensor& mean, at::Tensor& scratch) {
  const int64_t d = src.size(1);
  at::Tensor block = scratch.narrow(0, 0, rows * d).view({rows, d});
  at::sub_out(block, src.narrow(0, start, rows), mean);
  at::Tensor norms = block.square().sum(1);
  return {block, norms};
}

// One pair matrix a x b (within: a == b, blocks on and above the diagonal only). ga / gb: the
// gradients of a's and b's rows, undefined where not needed.
void pair_matrix(const Pass& pass, const at::Tensor& a, const at::Tensor& b, bool within, int64_t slot,
                 const at::Tensor& ga, const at::Tensor& gb) {
  const bool grad_a = pass.mode.grad && ga.defined(), grad_b = pass.mode.grad && gb.defined();
  const Mode mode{pass.mode.sum, grad_a || grad_b};
  if (!mode.sum && !mode.grad) return;
  const int64_t na_rows = a.size(0), nb_rows = b.size(0), d = a.size(1);
  const int64_t ta = std::min(kTile, na_rows), tb = std::min(kTile, nb_rows);
  at::Tensor scratch_a = at::empty({std::max<int64_t>(ta * d, 1)}, a.options());
  at::Tensor scratch_b = at::empty({std::max<int64_t>(tb * d, 1)}, a.options());
  at::Tensor scratch_dot = at::empty({ta * tb}, a.options());
  for (int64_t i0 = 0; i0 < na_rows; i0 += ta) {
    const int64_t ri = std::min(ta, na_rows - i0);
    auto [A, norm_a] = centred_block(a, i0, ri, pass.mean, scratch_a);
    for (int64_t j0 = within ? i0 : 0; j0 < nb_rows; j0 += tb) {
      const int64_t rj = std::min(tb, nb_rows - j0);
      const bool diagonal = within && j0 == i0;
      at::Tensor B = A, norm_b = norm_a;
      if (!diagonal) std::tie(B, norm_b) = centred_block(b, j0, rj, pass.mean, scratch_b);
      at::Tensor dot = scratch_dot.narrow(0, 0, ri * rj).view({ri, rj});
      at::mm_out(dot, A, B.t());
      tile(dot, norm_a, norm_b, pass, diagonal, mode, pass.scale[slot], slot);
      if (grad_a) {  // g_i += rowsum(C) a_i - (C B)_i
        at::Tensor rows = ga.narrow(0, i0, ri);
        rows.addcmul_(dot.sum({1}, true), A).addmm_(dot, B, 1.0, -1.0);
      }
      if (grad_b) {  // g_j += colsum(C) b_j - (C^T A)_j
        at::Tensor rows = gb.narrow(0, j0, rj);
        rows.addcmul_(dot.sum({0}).unsqueeze(1), B).addmm_(dot.t(), A, 1.0, -1.0);
      }
    }
  }
}

void quadratic(Pass& pass) {
  pair_matrix(pass, pass.x, pass.x, /*within=*/true, kXX, pass.gx, pass.gx);
  pair_matrix(pass, pass.y, pass.y, /*within=*/true, kYY, pass.gy, pass.gy);
  pair_matrix(pass, pass.x, pass.y, /*within=*/false, kXY, pass.gx, pass.gy);
}

void linear(Pass& pass, int64_t pairs) {
  const Mode mode{pass.mode.sum, pass.grad_x || pass.grad_y};
  if (pairs == 0 || (!mode.sum && !mode.grad)) return;
  constexpr int64_t kWarpsPerBlock = kThreads / 32;
  const int blocks = static_cast<int>(std::min<int64_t>((pairs + kWarpsPerBlock - 1) / kWarpsPerBlock, kMaxBlocks));
  at::Tensor partials = block_partials(mode, blocks, pass.acc);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(pass.x.scalar_type(), "mmd_linear_cuda", [&] {
    with_mode(mode, [&]<bool kSum, bool kGrad>() {
      linear_kernel<scalar_t, kSum, kGrad><<<blocks, kThreads, 0, stream>>>(
          pass.x.const_data_ptr<scalar_t>(), pass.y.const_data_ptr<scalar_t>(), pass.c.const_data_ptr<scalar_t>(),
          pass.w.const_data_ptr<scalar_t>(), static_cast<int>(pass.c.size(0)), pass.doubling, pairs, pass.x.size(1),
          static_cast<scalar_t>(pass.scale[0]), kSum ? partials.mutable_data_ptr<double>() : nullptr,
          pass.grad_x ? pass.gx.mutable_data_ptr<scalar_t>() : nullptr,
          pass.grad_y ? pass.gy.mutable_data_ptr<scalar_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  if (mode.sum) pass.acc.narrow(0, 0, 1).add_(partials.sum());
}

constexpr Backend kCudaBackend{quadratic, linear};

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CUDA, m) {
  using Ops = BoundOps<kCudaBackend>;
  m.impl("mmd", &Ops::value);
  m.impl("_mmd_with_grad", &Ops::value_and_grad);
  m.impl("_mmd_backward", &Ops::grad);
}

}  // namespace sim2real_fast::mmd
