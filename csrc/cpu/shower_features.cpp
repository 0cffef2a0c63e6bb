// CPU kernels of the shower features (events shared out by at::parallel_for) and their CPU
// registration; the per-layer arithmetic is shared with CUDA (sim2real_fast/shower_features.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "sim2real_fast/shower_features.h"

namespace sim2real_fast::shower_features {
namespace {

// Events per chunk of at::parallel_for.
constexpr int64_t kEventGrain = 64;

// One pass over each event's cells, layer by layer: vectorised sums in double, then the max-cell
// search over the same layer while it is still in L1.
template <typename T>
void forward_impl(const T* images, int64_t n, int64_t n_cells, const std::vector<int64_t>& offsets,
                  const T* coords, T threshold, T* layer_stats, T* event_stats, int64_t* max_cell) {
  const int64_t n_layers = static_cast<int64_t>(offsets.size()) - 1;
  at::parallel_for(0, n, kEventGrain, [&](int64_t first, int64_t last) {
  for (int64_t event = first; event < last; ++event) {
    const T* image = images + event * n_cells;
    T* stats = layer_stats + event * n_layers * kLayerStats;
    double total = 0;
    T best = image[0];
    int64_t best_cell = 0;
    for (int64_t l = 0; l < n_layers; ++l) {
      const int64_t begin = offsets[l], end = offsets[l + 1];
      double e = 0, sx = 0, sy = 0, sxx = 0, syy = 0, hits = 0;
#pragma omp simd reduction(+ : e, sx, sy, sxx, syy, hits)
      for (int64_t i = begin; i < end; ++i) {
        const double v = image[i], vx = v * coords[2 * i], vy = v * coords[2 * i + 1];
        e += v;
        sx += vx;
        sy += vy;
        sxx += vx * coords[2 * i];
        syy += vy * coords[2 * i + 1];
        hits += image[i] > threshold ? 1.0 : 0.0;
      }
      for (int64_t i = begin; i < end; ++i) {  // the layer is in L1 now; the first maximal cell
        if (takes_max(image[i], i, best, best_cell)) {
          best = image[i];
          best_cell = i;
        }
      }
      const LayerSums sums{e, sx, sy, sxx, syy, hits};
      finish_layer(sums, end - begin, stats + l * kLayerStats);
      total += sums.e;
    }
    event_stats[event * kEventStats + kTotal] = static_cast<T>(total);
    event_stats[event * kEventStats + kMaxFraction] = static_cast<T>(total != 0 ? best / total : 0.0);
    max_cell[event] = best_cell;
  }
  });
}

template <typename T>
void backward_impl(const T* grad_layer, const T* grad_event, int64_t n, int64_t n_cells,
                   const std::vector<int64_t>& offsets, const T* coords, const T* layer_stats,
                   const T* event_stats, const int64_t* max_cell, T* grad_images) {
  const int64_t n_layers = static_cast<int64_t>(offsets.size()) - 1;
  at::parallel_for(0, n, kEventGrain, [&](int64_t first, int64_t last) {
  for (int64_t event = first; event < last; ++event) {
    const EventGradient event_grad(event_stats + event * kEventStats, grad_event + event * kEventStats);
    T* out = grad_images + event * n_cells;
    for (int64_t l = 0; l < n_layers; ++l) {
      const int64_t row = (event * n_layers + l) * kLayerStats;
      const LayerGradient layer_grad(layer_stats + row, grad_layer + row, event_grad.base);
      for (int64_t i = offsets[l]; i < offsets[l + 1]; ++i) {
        out[i] = static_cast<T>(layer_grad.at(coords[2 * i], coords[2 * i + 1]));
      }
    }
    out[max_cell[event]] += static_cast<T>(event_grad.peak);
  }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& images_in, c10::IntArrayRef layer_offsets,
                                                       const at::Tensor& coords_in, double threshold) {
  check_inputs(kOp, images_in, layer_offsets, coords_in);
  const int64_t n = images_in.size(0), n_cells = images_in.size(1);
  const int64_t n_layers = static_cast<int64_t>(layer_offsets.size()) - 1;
  at::Tensor layer_stats = at::empty({n, n_layers, kLayerStats}, images_in.options());
  at::Tensor event_stats = at::empty({n, kEventStats}, images_in.options());
  at::Tensor max_cell = at::empty({n}, images_in.options().dtype(at::kLong));
  if (n == 0) return {layer_stats, event_stats, max_cell};
  const at::Tensor images = images_in.contiguous(), coords = coords_in.contiguous();
  const std::vector<int64_t> offsets(layer_offsets.begin(), layer_offsets.end());
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "shower_features_cpu", [&] {
    forward_impl<scalar_t>(images.const_data_ptr<scalar_t>(), n, n_cells, offsets,
                           coords.const_data_ptr<scalar_t>(), static_cast<scalar_t>(threshold),
                           layer_stats.mutable_data_ptr<scalar_t>(), event_stats.mutable_data_ptr<scalar_t>(),
                           max_cell.mutable_data_ptr<int64_t>());
  });
  return {layer_stats, event_stats, max_cell};
}

at::Tensor backward(const at::Tensor& grad_layer_in, const at::Tensor& grad_event_in, const at::Tensor& images,
                    c10::IntArrayRef layer_offsets, const at::Tensor& coords_in, const at::Tensor& layer_stats_in,
                    const at::Tensor& event_stats_in, const at::Tensor& max_cell_in) {
  check_backward_inputs(grad_layer_in, grad_event_in, images, layer_offsets, coords_in, layer_stats_in,
                        event_stats_in, max_cell_in);
  const int64_t n = images.size(0), n_cells = images.size(1);
  at::Tensor grad_images = at::empty({n, n_cells}, images.options());
  if (n == 0) return grad_images;
  const at::Tensor grad_layer = grad_layer_in.contiguous(), grad_event = grad_event_in.contiguous();
  const at::Tensor coords = coords_in.contiguous(), layer_stats = layer_stats_in.contiguous();
  const at::Tensor event_stats = event_stats_in.contiguous(), max_cell = max_cell_in.contiguous();
  const int64_t* cells = max_cell.const_data_ptr<int64_t>();
  for (int64_t event = 0; event < n; ++event) {
    TORCH_CHECK_INDEX(cells[event] >= 0 && cells[event] < n_cells, kBackwardOp, ": max_cell[", event, "] = ",
                cells[event], " is out of range [0, ", n_cells, ")");
  }
  const std::vector<int64_t> offsets(layer_offsets.begin(), layer_offsets.end());
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "shower_features_backward_cpu", [&] {
    backward_impl<scalar_t>(grad_layer.const_data_ptr<scalar_t>(), grad_event.const_data_ptr<scalar_t>(), n,
                            n_cells, offsets, coords.const_data_ptr<scalar_t>(),
                            layer_stats.const_data_ptr<scalar_t>(), event_stats.const_data_ptr<scalar_t>(),
                            cells, grad_images.mutable_data_ptr<scalar_t>());
  });
  return grad_images;
}

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CPU, m) {
  m.impl("shower_features", &forward);
  m.impl("_shower_features_backward", &backward);
}

}  // namespace sim2real_fast::shower_features
