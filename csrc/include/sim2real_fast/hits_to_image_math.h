// Element math of hits_to_image, shared by the CPU loops (csrc/cpu/hits_to_image.cpp, and the
// vectorised log1p in csrc/cpu/simd_impl.h) and the CUDA kernels (csrc/cuda/hits_to_image.cu).
//
// Per event and cell, in this order: the hits of the cell are summed (sum); times the cell's
// calibration (v); dead cells and cells with v < threshold read 0 (NaN is kept); then normalised.
#pragma once

#include <c10/macros/Macros.h>

#include <math.h>

#include <cstdint>

namespace sim2real_fast::hits {

enum class Normalize { kNone, kLog1p, kIncident, kSum };

namespace math {

// log1p on one value (host or device); the generic overload serves SIMD types with a log1p()
// member (at::vec::Vectorized: Sleef, NaN propagating). The CPU's float32 rows use a branch-free
// polynomial that vectorises instead (log1p_vectorisable in csrc/cpu/simd_impl.h, within 1.5 ulp).
C10_HOST_DEVICE inline float log1p_(float v) { return ::log1pf(v); }
C10_HOST_DEVICE inline double log1p_(double v) { return ::log1p(v); }
template <typename V>
inline V log1p_(const V& v) {
  return v.log1p();
}

// Whether event e's hits [begin, end) lie within the n_hits hits.
C10_HOST_DEVICE inline bool valid_offsets(int64_t begin, int64_t end, int64_t n_hits) {
  return 0 <= begin && begin <= end && end <= n_hits;
}

C10_HOST_DEVICE inline bool valid_cell(int64_t cell, int64_t n_cells) { return 0 <= cell && cell < n_cells; }

// The per-cell options of one call.
template <typename E>
struct Cells {
  const E* calibration;  // (n_cells,) or nullptr
  const bool* dead;      // (n_cells,) or nullptr
  E threshold;

  C10_HOST_DEVICE E factor(int64_t c) const { return calibration ? calibration[c] : E(1); }
  C10_HOST_DEVICE E calibrated(int64_t c, E sum) const { return calibration ? sum * calibration[c] : sum; }
  // Whether a cell with calibrated energy v survives the dead mask and the threshold (NaN does).
  C10_HOST_DEVICE bool kept(int64_t c, E v) const { return !(v < threshold) && !(dead && dead[c]); }
  // Calibrated, masked and zero-suppressed energy of cell c whose hit sum is `sum`.
  C10_HOST_DEVICE E value(int64_t c, E sum) const {
    const E v = calibrated(c, sum);
    return kept(c, v) ? v : E(0);
  }
};

// The event's divisor for "sum" (the total after suppression; an all-zero image stays 0) and
// "incident" (the incident energy); 1 otherwise. Outputs divide by it rather than multiply by its
// reciprocal, which overflows for a subnormal total.
template <Normalize kNorm, typename E>
C10_HOST_DEVICE E event_divisor(E total, E incident) {
  if constexpr (kNorm == Normalize::kSum) return total != E(0) ? total : E(1);
  if constexpr (kNorm == Normalize::kIncident) return incident;
  return E(1);
}

// The output of a cell with suppressed value v; V is E or a SIMD vector of E.
template <Normalize kNorm, typename V>
C10_HOST_DEVICE V normalised(V v, V divisor) {
  if constexpr (kNorm == Normalize::kLog1p) return log1p_(v);
  if constexpr (kNorm == Normalize::kSum || kNorm == Normalize::kIncident) return v / divisor;
  return v;
}

// d(loss)/d(hit energy) of a hit in cell c, given g = d(loss)/d(out_c), the calibrated value v,
// whether the cell was kept, the event divisor S and, for "sum", dot = sum_k g_k out_k:
// out_c = v_c / S gives d(loss)/d(v_c) = (g_c - dot) / S.
template <Normalize kNorm, typename E>
C10_HOST_DEVICE E energy_gradient(E g, E v, bool kept, E divisor, E dot, E factor) {
  if (!kept) return E(0);
  E d = g;
  if constexpr (kNorm == Normalize::kLog1p) d = g / (E(1) + v);
  if constexpr (kNorm == Normalize::kIncident) d = g / divisor;
  if constexpr (kNorm == Normalize::kSum) d = (g - dot) / divisor;
  return d * factor;
}

}  // namespace math
}  // namespace sim2real_fast::hits
