// The vectorised CPU loops for AVX-512 (F, BW, VL, DQ; ATen's AVX512 Vectorized, Sleef exp and log1p).
#define S2R_SIMD_TABLE kSimdAvx512
#include "simd_impl.h"
