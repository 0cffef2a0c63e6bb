// CPU (OpenMP) kernels of hits_to_image and its backward, and their CPU registration.
//
// One event per loop iteration: its hits are summed into a thread-local row of n_cells (it stays
// in L1/L2), the row is finalised (calibration, dead cells, threshold, normalisation) and stored
// once into the output, and zeroed again on the way. Reading the hits and writing the images is
// the whole memory traffic. A bad event is recorded (the smallest index wins) and skipped; the
// error is raised after the loop, so nothing is ever written out of bounds.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>
#include <sys/mman.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#ifdef __SSE2__
#include <immintrin.h>
#endif

#include "sim2real_fast/hits_to_image.h"

namespace sim2real_fast::hits {
namespace {

constexpr const char* kOp = "sim2real_fast.hits_to_image";

template <typename E, typename C>
struct Inputs {
  const int64_t* offsets;
  const C* cell;
  const E* energy;
  const E* calibration;  // or nullptr
  const bool* dead;      // or nullptr
  const E* incident;     // or nullptr
  int64_t n_events, n_hits, n_cells;
  E threshold;

  explicit Inputs(const Args& a)
      : offsets(a.offsets.const_data_ptr<int64_t>()),
        cell(a.cell.const_data_ptr<C>()),
        energy(a.energy.const_data_ptr<E>()),
        calibration(a.calibration.defined() ? a.calibration.const_data_ptr<E>() : nullptr),
        dead(a.dead.defined() ? a.dead.const_data_ptr<bool>() : nullptr),
        incident(a.incident.defined() ? a.incident.const_data_ptr<E>() : nullptr),
        n_events(a.n_events),
        n_hits(a.n_hits),
        n_cells(a.n_cells),
        threshold(static_cast<E>(a.threshold)) {}

  // Sums the hits of event e into row (zeroed, n_cells); false if the event is bad.
  bool accumulate(int64_t e, E* row) const {
    const int64_t begin = offsets[e], end = offsets[e + 1];
    if (begin < 0 || end < begin || end > n_hits) return false;
    for (int64_t h = begin; h < end; ++h) {
      const int64_t c = static_cast<int64_t>(cell[h]);
      if (c < 0 || c >= n_cells) return false;
      row[c] += energy[h];
    }
    return true;
  }

  E calibrated(int64_t c, E sum) const { return calibration ? sum * calibration[c] : sum; }
  // Whether cell c with calibrated energy v survives the dead mask and the threshold (NaN does).
  bool kept(int64_t c, E v) const { return !(v < threshold) && !(dead && dead[c]); }
  // Calibrated, masked and zero-suppressed energy of cell c whose hit sum is `sum`.
  E cell_value(int64_t c, E sum) const {
    const E v = calibrated(c, sum);
    return kept(c, v) ? v : E(0);
  }
};

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

// log1p for float without calls or branches, so that a row's loop vectorises (this file is built
// with -fno-trapping-math, which lets GCC turn the selects into blends): log(u) for u = 1 + x from
// Cephes' logf polynomial on the mantissa in [sqrt(1/2), sqrt(2)), plus the rounding correction
// (x - (u - 1)) / u. At most 1.5 ulp from the correctly rounded log1p (checked over every 97th float);
// -1 -> -inf, below -1 or NaN -> NaN, +inf -> +inf, as std::log1p.
inline float log1p_vectorisable(float x) {
  const float u = 1.0f + x;
  const int32_t bits = std::bit_cast<int32_t>(u);
  int32_t k = ((bits >> 23) & 0xff) - 127;
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f800000);  // u = m 2^k, m in [1, 2)
  const bool high = m > 1.41421356f;
  m = high ? 0.5f * m : m;
  k = high ? k + 1 : k;
  const float f = m - 1.0f, z = f * f, kf = static_cast<float>(k);
  float p = 7.0376836292e-2f;
  for (const float coefficient : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f,
                                  -1.6668057665e-1f, 2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f}) {
    p = p * f + coefficient;
  }
  float r = f + (f * z * p - 2.12194440e-4f * kf - 0.5f * z);
  r += 0.693359375f * kf;
  r += (x - (u - 1.0f)) / u;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  r = x == kInf ? kInf : r;
  r = x == -1.0f ? -kInf : r;
  return x < -1.0f || x != x ? std::numeric_limits<float>::quiet_NaN() : r;
}

// Finalises one summed row in place. kMasked: calibration or dead cells are given; without them
// the loops have no per-cell lookups and vectorise.
template <Normalize kNorm, bool kMasked, typename E, typename C>
void finalise_row(const Inputs<E, C>& in, int64_t e, E* row) {
  const E threshold = in.threshold;
  auto value = [&](int64_t c) {
    if constexpr (kMasked) return in.cell_value(c, row[c]);
    const E v = row[c];
    return v < threshold ? E(0) : v;
  };
  E scale = E(1);
  if constexpr (kNorm == Normalize::kSum) {
    E total = E(0);
#pragma omp simd reduction(+ : total)
    for (int64_t c = 0; c < in.n_cells; ++c) total += value(c);
    if (total != E(0)) scale = E(1) / total;  // an all-zero image stays as it is
  } else if constexpr (kNorm == Normalize::kIncident) {
    scale = E(1) / in.incident[e];
  }
  constexpr bool kLog1pHere = kNorm == Normalize::kLog1p && std::is_same_v<E, float>;
#pragma omp simd
  for (int64_t c = 0; c < in.n_cells; ++c) {
    const E v = value(c);
    if constexpr (kLog1pHere) {
      row[c] = log1p_vectorisable(v);
    } else {
      row[c] = kNorm == Normalize::kSum || kNorm == Normalize::kIncident ? v * scale : v;
    }
  }
}

template <Normalize kNorm, typename E, typename C>
int64_t forward_events(const Inputs<E, C>& in, E* out) {
  const bool masked = in.calibration != nullptr || in.dead != nullptr;
  advise_huge_pages(out, static_cast<size_t>(in.n_events * in.n_cells) * sizeof(E));
  int64_t first_bad = in.n_events;
#pragma omp parallel num_threads(at::get_num_threads()) reduction(min : first_bad)
  {
    std::vector<E> scratch(static_cast<size_t>(in.n_cells), E(0));
    std::vector<uint8_t> seen(kNorm == Normalize::kLog1p && !std::is_same_v<E, float> ? static_cast<size_t>(in.n_cells) : 0, 0);
    E* row = scratch.data();
#pragma omp for schedule(static)
    for (int64_t e = 0; e < in.n_events; ++e) {
      if (!in.accumulate(e, row)) {
        first_bad = std::min(first_bad, e);
        std::fill(row, row + in.n_cells, E(0));
        continue;
      }
      if (masked) {
        finalise_row<kNorm, true>(in, e, row);
      } else {
        finalise_row<kNorm, false>(in, e, row);
      }
      const int64_t begin = in.offsets[e], end = in.offsets[e + 1];
      if constexpr (kNorm == Normalize::kLog1p && !std::is_same_v<E, float>) {
        // Double: cells without hits hold 0 = log1p(0), so only the hit cells need std::log1p, once each.
        for (int64_t h = begin; h < end; ++h) {
          const C c = in.cell[h];
          if (!seen[c]) seen[c] = 1, row[c] = std::log1p(row[c]);
        }
        for (int64_t h = begin; h < end; ++h) seen[in.cell[h]] = 0;
      }
      store_row(out + e * in.n_cells, row, in.n_cells);
      std::fill(row, row + in.n_cells, E(0));
    }
    store_fence();
  }
  return first_bad;
}

// dL/d(energy) of one event: re-sums its hits (row), then one value per hit.
template <Normalize kNorm, typename E, typename C>
int64_t backward_events(const Inputs<E, C>& in, const E* grad, E* grad_energy) {
  int64_t first_bad = in.n_events;
#pragma omp parallel num_threads(at::get_num_threads()) reduction(min : first_bad)
  {
    std::vector<E> scratch(static_cast<size_t>(in.n_cells), E(0));
    E* row = scratch.data();
#pragma omp for schedule(static)
    for (int64_t e = 0; e < in.n_events; ++e) {
      const E* g = grad + e * in.n_cells;
      if (!in.accumulate(e, row)) {
        first_bad = std::min(first_bad, e);
        std::fill(row, row + in.n_cells, E(0));
        continue;
      }
      // Sum normalisation: out_c = v_c / S, so dL/dv_c = (g_c - sum_k g_k out_k) / S.
      E inv_total = E(1), dot = E(0);
      if constexpr (kNorm == Normalize::kSum) {
        E total = E(0), weighted = E(0);
        for (int64_t c = 0; c < in.n_cells; ++c) {
          const E v = in.cell_value(c, row[c]);
          total += v;
          weighted += g[c] * v;
        }
        if (total != E(0)) {
          inv_total = E(1) / total;
          dot = weighted * inv_total;
        }
      }
      const E inv_incident = kNorm == Normalize::kIncident ? E(1) / in.incident[e] : E(1);
      const int64_t begin = in.offsets[e], end = in.offsets[e + 1];
      for (int64_t h = begin; h < end; ++h) {
        const int64_t c = static_cast<int64_t>(in.cell[h]);
        const E v = in.calibrated(c, row[c]);
        const E k = in.calibration ? in.calibration[c] : E(1);
        E d = E(0);
        if (in.kept(c, v)) {
          if constexpr (kNorm == Normalize::kNone) d = g[c];
          if constexpr (kNorm == Normalize::kLog1p) d = g[c] / (E(1) + v);
          if constexpr (kNorm == Normalize::kIncident) d = g[c] * inv_incident;
          if constexpr (kNorm == Normalize::kSum) d = (g[c] - dot) * inv_total;
        }
        grad_energy[h] = d * k;
      }
      for (int64_t h = begin; h < end; ++h) row[in.cell[h]] = E(0);
    }
  }
  return first_bad;
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
