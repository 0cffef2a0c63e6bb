// CUDA kernels of hits_to_image and its backward, and their CUDA registration. Element math:
// sim2real_fast/hits_to_image_math.h (shared with the CPU kernels).
//
// One block per event (grid-stride over events): the event's hits are added into an accumulator
// row with atomics — in shared memory when n_cells fits (kSharedBytes), else in the output row
// itself — then the block finalises the row (calibration, dead cells, threshold, normalisation,
// block reductions for "sum") and writes it coalesced. A bad offset or cell index is never used
// to address memory: the block records the event in a device flag (atomicMin, so the first bad
// event wins) and the host reads the flag once after the launch (one synchronisation).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "sim2real_fast/hits_to_image.h"
#include "sim2real_fast/hits_to_image_math.h"

namespace sim2real_fast::hits {
namespace {

constexpr const char* kOp = "sim2real_fast.hits_to_image";
constexpr int kThreads = 256;
constexpr int64_t kSharedBytes = 32 * 1024;  // accumulator rows up to this size live in shared memory
constexpr int64_t kMaxBlocks = 1 << 16;
constexpr int64_t kMaxBlocksGlobal = 1024;   // the backward's global scratch is (blocks, n_cells)

template <typename E, typename C>
struct DeviceInputs {
  const int64_t* offsets;
  const C* cell;
  const E* energy;
  const E* incident;  // or nullptr
  math::Cells<E> cells;
  int64_t n_events, n_hits, n_cells;

  __device__ E incident_of(int64_t e) const { return incident ? incident[e] : E(1); }
};

template <typename E, typename C>
DeviceInputs<E, C> device_inputs(const Args& a) {
  return {a.offsets.const_data_ptr<int64_t>(),
          a.cell.const_data_ptr<C>(),
          a.energy.const_data_ptr<E>(),
          a.incident.defined() ? a.incident.const_data_ptr<E>() : nullptr,
          {a.calibration.defined() ? a.calibration.const_data_ptr<E>() : nullptr,
           a.dead.defined() ? a.dead.const_data_ptr<bool>() : nullptr, static_cast<E>(a.threshold)},
          a.n_events,
          a.n_hits,
          a.n_cells};
}

// Sum of v over the block; every thread gets it. `warp_sums` holds 32 values; ends synchronised.
template <typename E>
__device__ E block_sum(E v, E* warp_sums) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  E total = E(0);
  for (int w = 0; w < blockDim.x / 32; ++w) total += warp_sums[w];
  __syncthreads();
  return total;
}

// Adds the hits of event e into acc (zeroed); flags the event and returns false if it is bad.
template <typename E, typename C>
__device__ bool accumulate(const DeviceInputs<E, C>& in, int64_t e, E* acc, unsigned long long* first_bad) {
  const int64_t begin = in.offsets[e], end = in.offsets[e + 1];
  if (!math::valid_offsets(begin, end, in.n_hits)) {
    if (threadIdx.x == 0) atomicMin(first_bad, static_cast<unsigned long long>(e));
    return false;
  }
  bool ok = true;
  for (int64_t h = begin + threadIdx.x; h < end; h += blockDim.x) {
    const int64_t c = static_cast<int64_t>(in.cell[h]);
    if (!math::valid_cell(c, in.n_cells)) {
      ok = false;
      atomicMin(first_bad, static_cast<unsigned long long>(e));
    } else {
      atomicAdd(acc + c, in.energy[h]);
    }
  }
  return ok;
}

template <Normalize kNorm, bool kShared, typename E, typename C>
__global__ void forward_kernel(DeviceInputs<E, C> in, E* __restrict__ out, unsigned long long* first_bad) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];  // aligned for double
  __shared__ E warp_sums[32];
  for (int64_t e = blockIdx.x; e < in.n_events; e += gridDim.x) {
    E* row = out + e * in.n_cells;
    E* acc = kShared ? reinterpret_cast<E*>(shared_bytes) : row;  // the global row is pre-zeroed
    if constexpr (kShared) {
      for (int64_t c = threadIdx.x; c < in.n_cells; c += blockDim.x) acc[c] = E(0);
      __syncthreads();
    }
    accumulate(in, e, acc, first_bad);
    __syncthreads();
    E total = E(0);
    if constexpr (kNorm == Normalize::kSum) {
      E part = E(0);
      for (int64_t c = threadIdx.x; c < in.n_cells; c += blockDim.x) part += in.cells.value(c, acc[c]);
      total = block_sum(part, warp_sums);
    }
    const E divisor = math::event_divisor<kNorm>(total, in.incident_of(e));
    for (int64_t c = threadIdx.x; c < in.n_cells; c += blockDim.x) {
      row[c] = math::normalised<kNorm>(in.cells.value(c, acc[c]), divisor);
    }
    __syncthreads();  // acc is reused by the next event
  }
}

template <Normalize kNorm, bool kShared, typename E, typename C>
__global__ void backward_kernel(DeviceInputs<E, C> in, const E* __restrict__ grad, E* __restrict__ grad_energy,
                                E* scratch, unsigned long long* first_bad) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];  // aligned for double
  __shared__ E warp_sums[32];
  E* acc = kShared ? reinterpret_cast<E*>(shared_bytes) : scratch + blockIdx.x * in.n_cells;
  for (int64_t e = blockIdx.x; e < in.n_events; e += gridDim.x) {
    const E* g = grad + e * in.n_cells;
    if constexpr (kShared) {
      for (int64_t c = threadIdx.x; c < in.n_cells; c += blockDim.x) acc[c] = E(0);
      __syncthreads();
    }
    const bool ok = accumulate(in, e, acc, first_bad);
    const bool block_ok = __syncthreads_and(ok);
    const int64_t begin = in.offsets[e], end = in.offsets[e + 1];
    if (!block_ok) {  // bad event: nothing is read through its indices; the host raises
      if constexpr (!kShared) {
        for (int64_t c = threadIdx.x; c < in.n_cells; c += blockDim.x) acc[c] = E(0);
        __syncthreads();
      }
      continue;
    }
    E total = E(0), weighted = E(0);
    if constexpr (kNorm == Normalize::kSum) {
      E part_total = E(0), part_weighted = E(0);
      for (int64_t c = threadIdx.x; c < in.n_cells; c += blockDim.x) {
        const E v = in.cells.value(c, acc[c]);
        part_total += v;
        part_weighted += g[c] * v;
      }
      total = block_sum(part_total, warp_sums);
      weighted = block_sum(part_weighted, warp_sums);
    }
    const E divisor = math::event_divisor<kNorm>(total, in.incident_of(e));
    const E dot = weighted / divisor;
    for (int64_t h = begin + threadIdx.x; h < end; h += blockDim.x) {
      const int64_t c = static_cast<int64_t>(in.cell[h]);
      const E v = in.cells.calibrated(c, acc[c]);
      grad_energy[h] = math::energy_gradient<kNorm>(g[c], v, in.cells.kept(c, v), divisor, dot, in.cells.factor(c));
    }
    __syncthreads();
    if constexpr (!kShared) {  // re-zero the scratch row where this event wrote
      for (int64_t h = begin + threadIdx.x; h < end; h += blockDim.x) acc[in.cell[h]] = E(0);
      __syncthreads();
    }
  }
}

// Whether one event's accumulator row (n_cells energies) lives in shared memory.
bool row_fits_shared(const Args& args) {
  return args.n_cells * static_cast<int64_t>(args.energy.element_size()) <= kSharedBytes;
}

// Runs `launch<kNorm, kShared, E, C>(inputs, blocks, shared_bytes, stream)` for the call's types.
template <typename Launch>
void dispatch(const Args& args, int64_t max_blocks_global, Launch&& launch) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(args.energy.scalar_type(), "hits_to_image_cuda", [&] {
    using E = scalar_t;
    AT_DISPATCH_INDEX_TYPES(args.cell.scalar_type(), "hits_to_image_cuda", [&] {
      const auto in = device_inputs<E, index_t>(args);
      const bool shared = row_fits_shared(args);
      const int blocks = static_cast<int>(std::min(args.n_events, shared ? kMaxBlocks : max_blocks_global));
      const size_t smem = shared ? static_cast<size_t>(args.n_cells) * sizeof(E) : 0;
      auto run = [&](auto norm) {
        constexpr Normalize kNorm = decltype(norm)::value;
        if (shared) {
          launch.template operator()<kNorm, true>(in, blocks, smem, stream);
        } else {
          launch.template operator()<kNorm, false>(in, blocks, smem, stream);
        }
      };
      switch (args.normalize) {
        case Normalize::kNone: run(std::integral_constant<Normalize, Normalize::kNone>{}); break;
        case Normalize::kLog1p: run(std::integral_constant<Normalize, Normalize::kLog1p>{}); break;
        case Normalize::kIncident: run(std::integral_constant<Normalize, Normalize::kIncident>{}); break;
        case Normalize::kSum: run(std::integral_constant<Normalize, Normalize::kSum>{}); break;
      }
    });
  });
}

at::Tensor new_flag(const Args& args) {
  return at::full({1}, args.n_events, args.offsets.options());
}

// The one synchronisation: reads the flag and raises for the first bad event.
void raise_if_flagged(const Args& args, const at::Tensor& flag) {
  const int64_t first_bad = flag.cpu().const_data_ptr<int64_t>()[0];
  if (first_bad < args.n_events) throw_bad_event(kOp, args, first_bad);
}

at::Tensor hits_to_image_cuda(const at::Tensor& offsets, const at::Tensor& cell, const at::Tensor& energy,
                              int64_t n_cells, const c10::optional<at::Tensor>& calibration,
                              const c10::optional<at::Tensor>& dead, double threshold,
                              c10::string_view normalize, const c10::optional<at::Tensor>& incident_energy) {
  const Args args = check_args(kOp, offsets, cell, energy, n_cells, calibration, dead, threshold,
                               normalize, incident_energy);
  const c10::cuda::CUDAGuard guard(energy.device());
  at::Tensor out = row_fits_shared(args) ? at::empty({args.n_events, n_cells}, energy.options())
                          : at::zeros({args.n_events, n_cells}, energy.options());
  if (args.n_events == 0) return out;  // with n_cells == 0 the kernel still flags every hit
  const at::Tensor flag = new_flag(args);
  auto* first_bad = reinterpret_cast<unsigned long long*>(flag.data_ptr<int64_t>());
  dispatch(args, kMaxBlocks, [&]<Normalize kNorm, bool kShared>(const auto& in, int blocks, size_t smem,
                                                                 cudaStream_t stream) {
    using E = std::remove_cv_t<std::remove_pointer_t<decltype(in.energy)>>;
    using C = std::remove_cv_t<std::remove_pointer_t<decltype(in.cell)>>;
    forward_kernel<kNorm, kShared, E, C><<<blocks, kThreads, smem, stream>>>(in, out.mutable_data_ptr<E>(), first_bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  raise_if_flagged(args, flag);
  return out;
}

at::Tensor hits_to_image_backward_cuda(const at::Tensor& grad, const at::Tensor& offsets,
                                       const at::Tensor& cell, const at::Tensor& energy, int64_t n_cells,
                                       const c10::optional<at::Tensor>& calibration,
                                       const c10::optional<at::Tensor>& dead, double threshold,
                                       c10::string_view normalize,
                                       const c10::optional<at::Tensor>& incident_energy) {
  const Args args = check_args(kOp, offsets, cell, energy, n_cells, calibration, dead, threshold,
                               normalize, incident_energy);
  const c10::cuda::CUDAGuard guard(energy.device());
  const at::Tensor g = check_grad(kOp, grad, args);
  at::Tensor grad_energy = at::zeros_like(args.energy);  // hits outside every event get 0
  if (args.n_events == 0) return grad_energy;
  const at::Tensor scratch = row_fits_shared(args) ? at::Tensor()
                                                   : at::zeros({std::min(args.n_events, kMaxBlocksGlobal), n_cells},
                                                               energy.options());
  const at::Tensor flag = new_flag(args);
  auto* first_bad = reinterpret_cast<unsigned long long*>(flag.data_ptr<int64_t>());
  dispatch(args, kMaxBlocksGlobal, [&]<Normalize kNorm, bool kShared>(const auto& in, int blocks, size_t smem,
                                                                       cudaStream_t stream) {
    using E = std::remove_cv_t<std::remove_pointer_t<decltype(in.energy)>>;
    using C = std::remove_cv_t<std::remove_pointer_t<decltype(in.cell)>>;
    backward_kernel<kNorm, kShared, E, C><<<blocks, kThreads, smem, stream>>>(
        in, g.const_data_ptr<E>(), grad_energy.mutable_data_ptr<E>(),
        kShared ? nullptr : scratch.mutable_data_ptr<E>(), first_bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  raise_if_flagged(args, flag);
  return grad_energy;
}

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CUDA, m) {
  m.impl("hits_to_image", &hits_to_image_cuda);
  m.impl("_hits_to_image_backward", &hits_to_image_backward_cuda);
}

}  // namespace sim2real_fast::hits
