// CaloChallenge-style shower features: argument checks and the per-layer arithmetic shared by the
// CPU and CUDA kernels (csrc/cpu/shower_features.cpp, csrc/cuda/shower_features.cu).
//
// Per event and layer l (cells i of the layer, energies e_i, coordinates (x_i, y_i)):
//   E = sum e_i,  c_x = sum e_i x_i / E,  w_x = sqrt(max(sum e_i x_i^2 / E - c_x^2, 0))  (y alike),
//   sparsity = #(e_i > threshold) / #cells; centroids and widths are 0 where E == 0.
// Per event: total = sum of all cells, max_fraction = max_i e_i / total (0 where total == 0);
// the max cell is the first maximal cell, NaN counting as the largest value (as torch.argmax).
// Sums are accumulated in double (on both devices), so the one-pass width does not cancel in float32.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <math.h>

#include <cstdint>

namespace sim2real_fast::shower_features {

// Columns of layer_stats (N, L, kLayerStats) and event_stats (N, kEventStats).
enum LayerColumn : int { kEnergy = 0, kCentroidX, kCentroidY, kWidthX, kWidthY, kSparsity, kLayerStats };
enum EventColumn : int { kTotal = 0, kMaxFraction, kEventStats };

constexpr const char* kOp = "sim2real_fast.shower_features";
constexpr const char* kBackwardOp = "sim2real_fast._shower_features_backward";

// images (N, n_cells) float32/float64, layer_offsets (L + 1) from 0 to n_cells, non-decreasing,
// coords (n_cells, 2) with the dtype and device of images.
inline void check_inputs(const char* op, const at::Tensor& images, c10::IntArrayRef layer_offsets,
                         const at::Tensor& coords) {
  TORCH_CHECK_VALUE(images.dim() == 2, op, ": images must be 2-D (N, n_cells), got shape ", images.sizes());
  TORCH_CHECK_TYPE(images.scalar_type() == at::kFloat || images.scalar_type() == at::kDouble, op,
                   ": images must be a floating-point tensor (float32 or float64), got ", images.scalar_type());
  const int64_t n_cells = images.size(1);
  TORCH_CHECK_VALUE(n_cells >= 1 && n_cells < (int64_t{1} << 31), op,
              ": images must have between 1 and 2^31 - 1 cells, got shape ", images.sizes());
  TORCH_CHECK_VALUE(layer_offsets.size() >= 2, op,
              ": layer_offsets must have n_layers + 1 >= 2 entries, got ", layer_offsets.size());
  TORCH_CHECK_VALUE(layer_offsets.front() == 0, op, ": layer_offsets must start at 0, got ", layer_offsets);
  for (size_t l = 1; l < layer_offsets.size(); ++l) {
    TORCH_CHECK_VALUE(layer_offsets[l] >= layer_offsets[l - 1], op,
                ": layer_offsets must be non-decreasing, got ", layer_offsets);
  }
  TORCH_CHECK_VALUE(layer_offsets.back() == n_cells, op, ": layer_offsets must end at n_cells = ", n_cells,
              " (images ", images.sizes(), "), got ", layer_offsets.back());
  TORCH_CHECK_VALUE(coords.dim() == 2 && coords.size(0) == n_cells && coords.size(1) == 2, op,
              ": coords must be (n_cells, 2) = (", n_cells, ", 2), got shape ", coords.sizes());
  TORCH_CHECK_TYPE(coords.scalar_type() == images.scalar_type(), op, ": coords must have the dtype of images (",
              images.scalar_type(), "), got ", coords.scalar_type());
  TORCH_CHECK_VALUE(coords.device() == images.device(), op, ": coords must be on the device of images (",
              images.device(), "), got ", coords.device());
}

// `t` must be `shape`, with the dtype and device of `like` (dtype kLong when `integer`).
inline void check_like(const char* name, const at::Tensor& t, c10::IntArrayRef shape,
                       const at::Tensor& like, bool integer = false) {
  const auto dtype = integer ? at::kLong : like.scalar_type();
  TORCH_CHECK_VALUE(t.sizes() == shape, kBackwardOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype && t.device() == like.device(), kBackwardOp, ": ", name, " must be ",
              dtype, " on ", like.device(), ", got ", t.scalar_type(), " on ", t.device());
}

// The backward's inputs: the forward's, its outputs and their gradients (N events, L layers).
inline void check_backward_inputs(const at::Tensor& grad_layer_stats, const at::Tensor& grad_event_stats,
                                  const at::Tensor& images, c10::IntArrayRef layer_offsets,
                                  const at::Tensor& coords, const at::Tensor& layer_stats,
                                  const at::Tensor& event_stats, const at::Tensor& max_cell) {
  check_inputs(kBackwardOp, images, layer_offsets, coords);
  const int64_t n = images.size(0), n_layers = static_cast<int64_t>(layer_offsets.size()) - 1;
  check_like("grad_layer_stats", grad_layer_stats, {n, n_layers, kLayerStats}, images);
  check_like("grad_event_stats", grad_event_stats, {n, kEventStats}, images);
  check_like("layer_stats", layer_stats, {n, n_layers, kLayerStats}, images);
  check_like("event_stats", event_stats, {n, kEventStats}, images);
  check_like("max_cell", max_cell, {n}, images, /*integer=*/true);
}

// Whether cell i with value v replaces the current maximum `best` at cell best_i: a larger value,
// or an equal one at a lower cell; NaN counts as the largest value (the first NaN cell wins).
template <typename T>
C10_HOST_DEVICE bool takes_max(T v, int64_t i, T best, int64_t best_i) {
  const bool v_nan = v != v, best_nan = best != best;
  if (v_nan || best_nan) return v_nan && (!best_nan || i < best_i);
  return v > best || (v == best && i < best_i);
}

struct LayerSums {
  double e = 0, sx = 0, sy = 0, sxx = 0, syy = 0, hits = 0;

  C10_HOST_DEVICE void add(double v, double x, double y, bool hit) {
    e += v;
    sx += v * x;
    sy += v * y;
    sxx += v * x * x;
    syy += v * y * y;
    hits += hit ? 1.0 : 0.0;
  }
};

// out[0..kLayerStats) <- the features of one layer of `cells` cells.
template <typename T>
C10_HOST_DEVICE void finish_layer(const LayerSums& s, int64_t cells, T* out) {
  double cx = 0, cy = 0, wx = 0, wy = 0;
  if (s.e != 0) {
    cx = s.sx / s.e;
    cy = s.sy / s.e;
    wx = ::sqrt(::fmax(s.sxx / s.e - cx * cx, 0.0));
    wy = ::sqrt(::fmax(s.syy / s.e - cy * cy, 0.0));
  }
  out[kEnergy] = static_cast<T>(s.e);
  out[kCentroidX] = static_cast<T>(cx);
  out[kCentroidY] = static_cast<T>(cy);
  out[kWidthX] = static_cast<T>(wx);
  out[kWidthY] = static_cast<T>(wy);
  out[kSparsity] = static_cast<T>(cells > 0 ? s.hits / static_cast<double>(cells) : 0.0);
}

// d(loss)/d(e_i) = base + bx (x_i - c_x) + dx ((x_i - c_x)^2 - w_x^2) + (y alike) for the cells of
// one layer, plus `peak` at the event's max cell (see event_gradient).
struct LayerGradient {
  double base = 0, cx = 0, cy = 0, wx2 = 0, wy2 = 0, bx = 0, by = 0, dx = 0, dy = 0;

  // stats, grad: one layer's row of layer_stats and of its gradient; event_base: see event_gradient.
  template <typename T>
  C10_HOST_DEVICE LayerGradient(const T* stats, const T* grad, double event_base) {
    base = static_cast<double>(grad[kEnergy]) + event_base;
    const double e = stats[kEnergy];
    if (e == 0) return;  // centroids and widths are constant 0 in an empty layer
    cx = stats[kCentroidX];
    cy = stats[kCentroidY];
    const double wx = stats[kWidthX], wy = stats[kWidthY];
    wx2 = wx * wx;
    wy2 = wy * wy;
    bx = grad[kCentroidX] / e;  // d c_x / d e_i = (x_i - c_x) / E
    by = grad[kCentroidY] / e;
    // d w_x / d e_i = ((x_i - c_x)^2 - w_x^2) / (2 w_x E); defined 0 where w_x == 0.
    if (wx > 0) dx = grad[kWidthX] / (2.0 * wx * e);
    if (wy > 0) dy = grad[kWidthY] / (2.0 * wy * e);
  }

  C10_HOST_DEVICE double at(double x, double y) const {
    const double ux = x - cx, uy = y - cy;
    return base + bx * ux + by * uy + dx * (ux * ux - wx2) + dy * (uy * uy - wy2);
  }
};

// The event-level terms: every cell gets `base` = g_total - g_max m / total, the max cell also
// `peak` = g_max / total (d m / d e_i = ([i == k] - m) / total; 0 where total == 0).
struct EventGradient {
  double base = 0, peak = 0;

  template <typename T>
  C10_HOST_DEVICE EventGradient(const T* stats, const T* grad) {
    base = grad[kTotal];
    const double total = stats[kTotal];
    if (total != 0) {
      peak = grad[kMaxFraction] / total;
      base -= peak * static_cast<double>(stats[kMaxFraction]);
    }
  }
};

}  // namespace sim2real_fast::shower_features
