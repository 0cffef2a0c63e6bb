// Element math of the multi-kernel MMD, shared by the CPU loops (csrc/cpu/mmd.cpp, scalar and
// at::vec::Vectorized lanes) and the CUDA kernels (csrc/cuda/mmd.cu).
//
// k(d) = sum_k w_k exp(c_k d) with c_k = -1 / (2 sigma2_k) and d = ||a - b||^2.
#pragma once

#include <c10/macros/Macros.h>

#include <math.h>

namespace sim2real_fast::mmd::math {

// exp on one value (host or device); the generic overload serves SIMD types with an exp() member
// (at::vec::Vectorized: Sleef, NaN propagating).
C10_HOST_DEVICE inline float exp_(float v) { return ::expf(v); }
C10_HOST_DEVICE inline double exp_(double v) { return ::exp(v); }
template <typename V>
inline V exp_(const V& v) {
  return v.exp();
}

// max(v, 0) that keeps NaN; the generic overload uses the SIMD type's NaN-propagating maximum.
C10_HOST_DEVICE inline float zero_if_negative(float v) { return v < 0.0f ? 0.0f : v; }
C10_HOST_DEVICE inline double zero_if_negative(double v) { return v < 0.0 ? 0.0 : v; }
template <typename V>
inline V zero_if_negative(const V& v) {
  return maximum(v, V(0));
}

// Squared distance from centred squared norms and a dot product: ||a||^2 + ||b||^2 - 2 a.b,
// clamped at 0 against rounding; NaN passes through.
template <typename V>
C10_HOST_DEVICE V squared_distance(V norm_a, V norm_b, V dot) {
  return zero_if_negative(norm_a + norm_b - V(2) * dot);
}

// value = k(d) and/or slope = dk/dd = sum_k w_k c_k exp(c_k d), sharing the exponentials.
// c, w: K scalars of type T; V is T or a SIMD vector of T. With `doubling`, c[q] = 2^q c[0]
// exactly (the default kernel scales 1/8 ... 2 are powers of two): one exponential, then each
// next kernel is the square of the previous one (exp(2 u) = exp(u)^2; the K-th kernel's relative
// rounding error grows to about 2^(K-1) ulp, ~1e-6 in float32 for K = 5).
template <bool kSum, bool kGrad, typename V, typename T>
C10_HOST_DEVICE void kernel_terms(V d, const T* c, const T* w, int k, bool doubling, V& value, V& slope) {
  value = V(0);
  slope = V(0);
  V e = doubling ? exp_(V(c[0]) * d) : V(0);
  for (int q = 0; q < k; ++q) {
    if (doubling) {
      if (q > 0) e = e * e;
    } else {
      e = exp_(V(c[q]) * d);
    }
    const V we = V(w[q]) * e;
    if constexpr (kSum) value = value + we;
    if constexpr (kGrad) slope = slope + V(c[q]) * we;
  }
}

// Whether c[0..k) doubles from one kernel to the next, exactly (see kernel_terms).
template <typename T>
C10_HOST_DEVICE bool doubling_chain(const T* c, int k) {
  for (int q = 1; q < k; ++q) {
    if (!(c[q] == T(2) * c[q - 1])) return false;
  }
  return true;
}

// Gretton's linear estimator on one quadruple a = x_2l, b = x_2l+1, p = y_2l, q = y_2l+1:
// h = k(a, b) + k(p, q) - k(a, q) - k(b, p). Given the four squared distances, `terms` gets h and
// the four slopes times 2 * scale, so that with s = terms.s_*:
//   dh/da = s_ab (a - b) - s_aq (a - q),   dh/db = s_ab (b - a) - s_bp (b - p),
//   dh/dp = s_pq (p - q) - s_bp (p - b),   dh/dq = s_pq (q - p) - s_aq (q - a)  (times scale).
template <typename T>
struct LinearTerms {
  T h, s_ab, s_pq, s_aq, s_bp;
};

template <bool kSum, bool kGrad, typename T>
C10_HOST_DEVICE LinearTerms<T> linear_terms(T d_ab, T d_pq, T d_aq, T d_bp, const T* c, const T* w,
                                            int k, bool doubling, T scale) {
  T v_ab, v_pq, v_aq, v_bp;
  LinearTerms<T> t;
  kernel_terms<kSum, kGrad>(d_ab, c, w, k, doubling, v_ab, t.s_ab);
  kernel_terms<kSum, kGrad>(d_pq, c, w, k, doubling, v_pq, t.s_pq);
  kernel_terms<kSum, kGrad>(d_aq, c, w, k, doubling, v_aq, t.s_aq);
  kernel_terms<kSum, kGrad>(d_bp, c, w, k, doubling, v_bp, t.s_bp);
  // An infinite distance (an infinite sample, or overflow) makes h NaN, as the quadratic estimators'
  // norm expansion does, rather than the kernel's limit 0, which would hide the infinite sample
  // behind a finite loss.
  t.h = v_ab + v_pq - v_aq - v_bp + (d_ab * T(0) + d_pq * T(0) + d_aq * T(0) + d_bp * T(0));
  const T two_scale = T(2) * scale;
  t.s_ab *= two_scale, t.s_pq *= two_scale, t.s_aq *= two_scale, t.s_bp *= two_scale;
  return t;
}

}  // namespace sim2real_fast::mmd::math
