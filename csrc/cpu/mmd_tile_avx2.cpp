// The MMD tile pass for AVX2 + FMA (built with -mavx2 -mfma; ATen's Vectorized, Sleef exp).
#define S2R_TILE_FUNCTION tile_avx2
#include "mmd_tile_impl.h"
