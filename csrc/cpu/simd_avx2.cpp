// The vectorised CPU loops for AVX2 + FMA (built with -mavx2 -mfma; Sleef exp and log1p).
#define S2R_SIMD_TABLE kSimdAvx2
#include "simd_impl.h"
