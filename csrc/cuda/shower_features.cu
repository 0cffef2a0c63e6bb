// CUDA kernels of the shower features and their CUDA registration.
//
// Forward: one block per event, one warp per layer (layers strided over the block's warps); each
// lane accumulates its cells' sums in double, a warp shuffle reduction finishes the layer, and the
// block combines the warps' totals and max cells in a fixed order: no atomics, reproducible.
// Accumulating x^2-moments in double keeps the one-pass width free of float32 cancellation.
// Backward: one block per event, the block's threads walk each layer's cells.
// The layer offsets travel by value in the kernel arguments (no host-to-device copy, no sync).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <limits>
#include <tuple>

#include "sim2real_fast/shower_features.h"

namespace sim2real_fast::shower_features {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxWarps = 8;
constexpr int kBackwardThreads = 256;
constexpr int kMaxLayers = 512;  // the offsets fill 2 KiB of the 4 KiB kernel-argument space

struct Offsets {
  int32_t v[kMaxLayers + 1];
};

Offsets pack_offsets(const char* op, c10::IntArrayRef layer_offsets) {
  const int64_t n_layers = static_cast<int64_t>(layer_offsets.size()) - 1;
  TORCH_CHECK_VALUE(n_layers <= kMaxLayers, op, ": the CUDA kernel supports up to ", kMaxLayers,
              " layers, got ", n_layers);
  Offsets offsets{};
  for (int64_t l = 0; l <= n_layers; ++l) offsets.v[l] = static_cast<int32_t>(layer_offsets[l]);
  return offsets;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// (best, cell) <- (v, v_cell) when it takes the maximum (see takes_max: NaN is the largest value).
template <typename T>
__device__ __forceinline__ void keep_max(T& best, int& cell, T v, int v_cell) {
  if (takes_max(v, v_cell, best, cell)) {
    best = v;
    cell = v_cell;
  }
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ images, int n_cells, int n_layers, Offsets offsets,
                               const T* __restrict__ coords, T threshold, T* __restrict__ layer_stats,
                               T* __restrict__ event_stats, int64_t* __restrict__ max_cell) {
  __shared__ double warp_total[kMaxWarps];
  __shared__ T warp_best[kMaxWarps];
  __shared__ int warp_cell[kMaxWarps];
  const int64_t event = blockIdx.x;
  const T* image = images + event * n_cells;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
  double total = 0;  // lane 0's sum of its warp's layer energies
  T best = -std::numeric_limits<T>::infinity();
  int best_cell = INT_MAX;  // every cell is in a layer, so every event sets it
  for (int l = warp; l < n_layers; l += warps) {
    LayerSums sums;
    for (int64_t i = offsets.v[l] + lane; i < offsets.v[l + 1]; i += kWarp) {  // 64-bit: no overflow near 2^31
      const T v = image[i];
      sums.add(v, coords[2 * i], coords[2 * i + 1], v > threshold);
      keep_max(best, best_cell, v, static_cast<int>(i));
    }
    sums.e = warp_sum(sums.e);
    sums.sx = warp_sum(sums.sx);
    sums.sy = warp_sum(sums.sy);
    sums.sxx = warp_sum(sums.sxx);
    sums.syy = warp_sum(sums.syy);
    sums.hits = warp_sum(sums.hits);
    if (lane == 0) {
      finish_layer(sums, offsets.v[l + 1] - offsets.v[l], layer_stats + (event * n_layers + l) * kLayerStats);
      total += sums.e;
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const T other = __shfl_down_sync(0xffffffffu, best, offset);
    const int other_cell = __shfl_down_sync(0xffffffffu, best_cell, offset);
    keep_max(best, best_cell, other, other_cell);
  }
  if (lane == 0) {
    warp_total[warp] = total;
    warp_best[warp] = best;
    warp_cell[warp] = best_cell;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    total = 0;
    for (int w = 0; w < warps; ++w) {
      total += warp_total[w];
      keep_max(best, best_cell, warp_best[w], warp_cell[w]);
    }
    event_stats[event * kEventStats + kTotal] = static_cast<T>(total);
    event_stats[event * kEventStats + kMaxFraction] = static_cast<T>(total != 0 ? best / total : 0.0);
    max_cell[event] = best_cell;
  }
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ grad_layer, const T* __restrict__ grad_event, int n_cells,
                                int n_layers, Offsets offsets, const T* __restrict__ coords,
                                const T* __restrict__ layer_stats, const T* __restrict__ event_stats,
                                const int64_t* __restrict__ max_cell, T* __restrict__ grad_images,
                                unsigned long long* __restrict__ first_bad) {
  const int64_t event = blockIdx.x;
  const EventGradient event_grad(event_stats + event * kEventStats, grad_event + event * kEventStats);
  const int64_t peak_cell = max_cell[event];
  if (peak_cell < 0 || peak_cell >= n_cells) {  // bad input: flagged for the host, nothing written
    if (threadIdx.x == 0) atomicMin(first_bad, static_cast<unsigned long long>(event));
    return;
  }
  T* out = grad_images + event * n_cells;
  for (int l = 0; l < n_layers; ++l) {
    const int64_t row = (event * n_layers + l) * kLayerStats;
    const LayerGradient layer_grad(layer_stats + row, grad_layer + row, event_grad.base);
    for (int64_t i = offsets.v[l] + threadIdx.x; i < offsets.v[l + 1]; i += blockDim.x) {
      const double g = layer_grad.at(coords[2 * i], coords[2 * i + 1]);
      out[i] = static_cast<T>(i == peak_cell ? g + event_grad.peak : g);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& images_in, c10::IntArrayRef layer_offsets,
                                                       const at::Tensor& coords_in, double threshold) {
  check_inputs(kOp, images_in, layer_offsets, coords_in);
  const c10::cuda::CUDAGuard guard(images_in.device());
  const Offsets offsets = pack_offsets(kOp, layer_offsets);
  const int64_t n = images_in.size(0), n_cells = images_in.size(1);
  const int n_layers = static_cast<int>(layer_offsets.size()) - 1;
  at::Tensor layer_stats = at::empty({n, n_layers, kLayerStats}, images_in.options());
  at::Tensor event_stats = at::empty({n, kEventStats}, images_in.options());
  at::Tensor max_cell = at::empty({n}, images_in.options().dtype(at::kLong));
  if (n == 0) return {layer_stats, event_stats, max_cell};
  TORCH_CHECK(n <= INT_MAX, kOp, ": the CUDA kernel supports up to 2^31 - 1 events, got ", n);
  const at::Tensor images = images_in.contiguous(), coords = coords_in.contiguous();
  const int threads = kWarp * std::min(kMaxWarps, n_layers);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "shower_features_cuda", [&] {
    forward_kernel<scalar_t><<<static_cast<unsigned>(n), threads, 0, stream>>>(
        images.const_data_ptr<scalar_t>(), static_cast<int>(n_cells), n_layers, offsets,
        coords.const_data_ptr<scalar_t>(), static_cast<scalar_t>(threshold), layer_stats.mutable_data_ptr<scalar_t>(),
        event_stats.mutable_data_ptr<scalar_t>(), max_cell.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {layer_stats, event_stats, max_cell};
}

at::Tensor backward(const at::Tensor& grad_layer_in, const at::Tensor& grad_event_in, const at::Tensor& images,
                    c10::IntArrayRef layer_offsets, const at::Tensor& coords_in, const at::Tensor& layer_stats_in,
                    const at::Tensor& event_stats_in, const at::Tensor& max_cell_in) {
  check_backward_inputs(grad_layer_in, grad_event_in, images, layer_offsets, coords_in, layer_stats_in,
                        event_stats_in, max_cell_in);
  const c10::cuda::CUDAGuard guard(images.device());
  const Offsets offsets = pack_offsets(kBackwardOp, layer_offsets);
  const int64_t n = images.size(0), n_cells = images.size(1);
  const int n_layers = static_cast<int>(layer_offsets.size()) - 1;
  at::Tensor grad_images = at::empty({n, n_cells}, images.options());
  if (n == 0) return grad_images;
  TORCH_CHECK(n <= INT_MAX, kBackwardOp, ": the CUDA kernel supports up to 2^31 - 1 events, got ", n);
  const at::Tensor grad_layer = grad_layer_in.contiguous(), grad_event = grad_event_in.contiguous();
  const at::Tensor coords = coords_in.contiguous(), layer_stats = layer_stats_in.contiguous();
  const at::Tensor event_stats = event_stats_in.contiguous(), max_cell = max_cell_in.contiguous();
  const at::Tensor flag = at::full({1}, n, max_cell.options());
  auto* first_bad = reinterpret_cast<unsigned long long*>(flag.data_ptr<int64_t>());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "shower_features_backward_cuda", [&] {
    backward_kernel<scalar_t><<<static_cast<unsigned>(n), kBackwardThreads, 0, stream>>>(
        grad_layer.const_data_ptr<scalar_t>(), grad_event.const_data_ptr<scalar_t>(), static_cast<int>(n_cells),
        n_layers, offsets, coords.const_data_ptr<scalar_t>(), layer_stats.const_data_ptr<scalar_t>(),
        event_stats.const_data_ptr<scalar_t>(), max_cell.const_data_ptr<int64_t>(),
        grad_images.mutable_data_ptr<scalar_t>(), first_bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // One synchronisation: a bad max_cell is an error, not a device assert.
  const int64_t bad = flag.cpu().const_data_ptr<int64_t>()[0];
  if (bad < n) {
    const int64_t value = max_cell.narrow(0, bad, 1).cpu().const_data_ptr<int64_t>()[0];
    TORCH_CHECK_INDEX(false, kBackwardOp, ": max_cell[", bad, "] = ", value, " is out of range [0, ", n_cells, ")");
  }
  return grad_images;
}

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CUDA, m) {
  m.impl("shower_features", &forward);
  m.impl("_shower_features_backward", &backward);
}

}  // namespace sim2real_fast::shower_features
