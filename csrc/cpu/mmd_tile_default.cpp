// The MMD tile pass for any x86-64 or other CPU (ATen's generic vector type, scalar exp).
#define S2R_TILE_FUNCTION tile_default
#include "mmd_tile_impl.h"
