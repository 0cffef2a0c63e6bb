// CPU kernels of hits_to_image and its backward, and their CPU registration. Element math:
// sim2real_fast/hits_to_image_math.h; events are shared out by at::parallel_for (torch's pool).
//
// One event per loop iteration: its hits are summed into a per-chunk row of n_cells (it stays
// in L1/L2), the row is finalised (calibration, dead cells, threshold, normalisation; log1p by
// Sleef on vector lanes, see simd.h) and stored once into the output, and zeroed again on the
// way. Reading the hits and writing the images is the whole memory traffic. A bad event is
// recorded (the smallest index wins) and skipped; the error is raised after the loop, so nothing
// is ever written out of bounds.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <sys/mman.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#ifdef __SSE2__
#include <immintrin.h>
#endif

#include "simd.h"
#include "sim2real_fast/hits_to_image.h"
#include "sim2real_fast/hits_to_image_math.h"

namespace sim2real_fast::hits {
namespace {

constexpr const char* kOp = "sim2real_fast.hits_to_image";

template <typename E, typename C>
struct Inputs {
  const int64_t* offsets;
  const C* cell;
  const E* energy;
  const E* incident;  // or nullptr
  math::Cells<E> cells;
  int64_t n_events, n_hits, n_cells;

  explicit Inputs(const Args& a)
      : offsets(a.offsets.const_data_ptr<int64_t>()),
        cell(a.cell.const_data_ptr<C>()),
        energy(a.energy.const_data_ptr<E>()),
        incident(a.incident.defined() ? a.incident.const_data_ptr<E>() : nullptr),
        cells{a.calibration.defined() ? a.calibration.const_data_ptr<E>() : nullptr,
              a.dead.defined() ? a.dead.const_data_ptr<bool>() : nullptr, static_cast<E>(a.threshold)},
        n_events(a.n_events),
        n_hits(a.n_hits),
        n_cells(a.n_cells) {}

  bool masked() const { return cells.calibration != nullptr || cells.dead != nullptr; }
  E incident_of(int64_t e) const { return incident ? incident[e] : E(1); }

  // Sums the hits of event e into row (zeroed, n_cells); false if the event is bad.
  bool accumulate(int64_t e, E* row) const {
    const int64_t begin = offsets[e], end = offsets[e + 1];
    if (!math::valid_offsets(begin, end, n_hits)) return false;
    for (int64_t h = begin; h < end; ++h) {
      const int64_t c = static_cast<int64_t>(cell[h]);
      if (!math::valid_cell(c, n_cells)) return false;
      row[c] += energy[h];
    }
    return true;
  }
};

// Lowers `first_bad` to `event` (the smallest bad event wins).
void flag_bad(std::atomic<int64_t>& first_bad, int64_t event) {
  int64_t seen = first_bad.load();
  while (event < seen && !first_bad.compare_exchange_weak(seen, event)) {
  }
}

// Fresh output buffers of many MiB are first touched here: with transparent huge pages in
// "madvise" mode, asking for them cuts the page faults of that first touch about 500-fold.
void advise_huge_pages(void* data, size_t bytes) {
#ifdef __linux__
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  if (bytes < 4 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint
#endif
}

// dst[0, n) <- row[0, n) with streaming stores where possible: the output is written once and not
// read again here, so it need not be read into the cache first.
template <typename E>
void store_row(E* dst, const E* row, int64_t n) {
  int64_t c = 0;
#ifdef __SSE2__
  constexpr int64_t kLanes = 16 / sizeof(E);
  while (c < n && reinterpret_cast<uintptr_t>(dst + c) % 16 != 0) dst[c] = row[c], ++c;
  for (; c + kLanes <= n; c += kLanes) {
    if constexpr (std::is_same_v<E, float>) {
      _mm_stream_ps(dst + c, _mm_loadu_ps(row + c));
    } else {
      _mm_stream_pd(dst + c, _mm_loadu_pd(row + c));
    }
  }
#endif
  for (; c < n; ++c) dst[c] = row[c];
}

void store_fence() {
#ifdef __SSE2__
  _mm_sfence();  // streaming stores are weakly ordered: publish them before the threads join
#endif
}

// Finalises one summed row in place. kMasked: calibration or dead cells are given; without them
// the loops have no per-cell lookups and vectorise.
template <Normalize kNorm, bool kMasked, typename E, typename C>
void finalise_row(const Inputs<E, C>& in, int64_t e, E* row) {
  const E threshold = in.cells.threshold;
  auto value = [&](int64_t c) {
    if constexpr (kMasked) return in.cells.value(c, row[c]);
    const E v = row[c];
    return v < threshold ? E(0) : v;
  };
  E total = E(0);
  if constexpr (kNorm == Normalize::kSum) {
#pragma omp simd reduction(+ : total)
    for (int64_t c = 0; c < in.n_cells; ++c) total += value(c);
  }
  const E divisor = math::event_divisor<kNorm>(total, in.incident_of(e));
  if constexpr (kNorm == Normalize::kLog1p) {
#pragma omp simd
    for (int64_t c = 0; c < in.n_cells; ++c) row[c] = value(c);
    if constexpr (std::is_same_v<E, float>) {
      cpu::simd().log1p_float(row, in.n_cells);
    } else {
      cpu::simd().log1p_double(row, in.n_cells);
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < in.n_cells; ++c) row[c] = math::normalised<kNorm>(value(c), divisor);
  }
}

// Events per chunk of at::parallel_for: enough to amortise the chunk's scratch row.
constexpr int64_t kEventGrain = 256;

template <Normalize kNorm, typename E, typename C>
int64_t forward_events(const Inputs<E, C>& in, E* out) {
  const bool masked = in.masked();
  advise_huge_pages(out, static_cast<size_t>(in.n_events * in.n_cells) * sizeof(E));
  std::atomic<int64_t> first_bad{in.n_events};
  at::parallel_for(0, in.n_events, kEventGrain, [&](int64_t first, int64_t last) {
    std::vector<E> scratch(static_cast<size_t>(in.n_cells), E(0));
    E* row = scratch.data();
    for (int64_t e = first; e < last; ++e) {
      if (!in.accumulate(e, row)) {
        flag_bad(first_bad, e);
        std::fill(row, row + in.n_cells, E(0));
        continue;
      }
      if (masked) {
        finalise_row<kNorm, true>(in, e, row);
      } else {
        finalise_row<kNorm, false>(in, e, row);
      }
      store_row(out + e * in.n_cells, row, in.n_cells);
      std::fill(row, row + in.n_cells, E(0));
    }
    store_fence();
  });
  return first_bad.load();
}

// dL/d(energy) of one event: re-sums its hits (row), then one value per hit.
template <Normalize kNorm, typename E, typename C>
int64_t backward_events(const Inputs<E, C>& in, const E* grad, E* grad_energy) {
  std::atomic<int64_t> first_bad{in.n_events};
  at::parallel_for(0, in.n_events, kEventGrain, [&](int64_t first, int64_t last) {
    std::vector<E> scratch(static_cast<size_t>(in.n_cells), E(0));
    E* row = scratch.data();
    for (int64_t e = first; e < last; ++e) {
      const E* g = grad + e * in.n_cells;
      if (!in.accumulate(e, row)) {
        flag_bad(first_bad, e);
        std::fill(row, row + in.n_cells, E(0));
        continue;
      }
      E total = E(0), weighted = E(0);
      if constexpr (kNorm == Normalize::kSum) {
        for (int64_t c = 0; c < in.n_cells; ++c) {
          const E v = in.cells.value(c, row[c]);
          total += v;
          weighted += g[c] * v;
        }
      }
      const E divisor = math::event_divisor<kNorm>(total, in.incident_of(e));
      const E dot = weighted / divisor;
      const int64_t begin = in.offsets[e], end = in.offsets[e + 1];
      for (int64_t h = begin; h < end; ++h) {
        const int64_t c = static_cast<int64_t>(in.cell[h]);
        const E v = in.cells.calibrated(c, row[c]);
        grad_energy[h] = math::energy_gradient<kNorm>(g[c], v, in.cells.kept(c, v), divisor, dot, in.cells.factor(c));
      }
      for (int64_t h = begin; h < end; ++h) row[in.cell[h]] = E(0);
    }
  });
  return first_bad.load();
}

template <typename F>
void dispatch(const Args& args, F&& body) {
  AT_DISPATCH_FLOATING_TYPES(args.energy.scalar_type(), "hits_to_image_cpu", [&] {
    using E = scalar_t;
    AT_DISPATCH_INDEX_TYPES(args.cell.scalar_type(), "hits_to_image_cpu", [&] {
      const Inputs<E, index_t> in(args);
      switch (args.normalize) {
        case Normalize::kNone: body.template operator()<Normalize::kNone>(in); break;
        case Normalize::kLog1p: body.template operator()<Normalize::kLog1p>(in); break;
        case Normalize::kIncident: body.template operator()<Normalize::kIncident>(in); break;
        case Normalize::kSum: body.template operator()<Normalize::kSum>(in); break;
      }
    });
  });
}

at::Tensor hits_to_image_cpu(const at::Tensor& offsets, const at::Tensor& cell, const at::Tensor& energy,
                             int64_t n_cells, const c10::optional<at::Tensor>& calibration,
                             const c10::optional<at::Tensor>& dead, double threshold,
                             c10::string_view normalize, const c10::optional<at::Tensor>& incident_energy) {
  const Args args = check_args(kOp, offsets, cell, energy, n_cells, calibration, dead, threshold,
                               normalize, incident_energy);
  at::Tensor out = at::empty({args.n_events, n_cells}, energy.options());
  int64_t first_bad = args.n_events;
  dispatch(args, [&]<Normalize kNorm>(const auto& in) {
    using E = std::remove_cv_t<std::remove_pointer_t<decltype(in.energy)>>;
    first_bad = forward_events<kNorm>(in, out.mutable_data_ptr<E>());
  });
  if (first_bad < args.n_events) throw_bad_event(kOp, args, first_bad);
  return out;
}

at::Tensor hits_to_image_backward_cpu(const at::Tensor& grad, const at::Tensor& offsets,
                                      const at::Tensor& cell, const at::Tensor& energy, int64_t n_cells,
                                      const c10::optional<at::Tensor>& calibration,
                                      const c10::optional<at::Tensor>& dead, double threshold,
                                      c10::string_view normalize,
                                      const c10::optional<at::Tensor>& incident_energy) {
  const Args args = check_args(kOp, offsets, cell, energy, n_cells, calibration, dead, threshold,
                               normalize, incident_energy);
  const at::Tensor g = check_grad(kOp, grad, args);
  // Hits outside [offsets[0], offsets[N]) belong to no event: their gradient is 0.
  at::Tensor grad_energy = at::zeros_like(args.energy);
  int64_t first_bad = args.n_events;
  dispatch(args, [&]<Normalize kNorm>(const auto& in) {
    using E = std::remove_cv_t<std::remove_pointer_t<decltype(in.energy)>>;
    first_bad = backward_events<kNorm>(in, g.const_data_ptr<E>(), grad_energy.mutable_data_ptr<E>());
  });
  if (first_bad < args.n_events) throw_bad_event(kOp, args, first_bad);
  return grad_energy;
}

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CPU, m) {
  m.impl("hits_to_image", &hits_to_image_cpu);
  m.impl("_hits_to_image_backward", &hits_to_image_backward_cpu);
}

}  // namespace sim2real_fast::hits
