// Every op schema of the library. Kernels: csrc/cpu/*.cpp (CPU) and csrc/cuda/*.cu (CUDA);
// autograd and fake (meta) implementations: sim2real_fast/ops/*.py.
#include <torch/library.h>

TORCH_LIBRARY(sim2real_fast, m) {
  // Multi-kernel Gaussian MMD^2 between x (n, d) and y (m, d):
  // k(a, b) = sum_k weights[k] exp(-||a - b||^2 / (2 sigma2[k])), estimator in
  // {"unbiased", "biased", "linear"}. Returns a 0-dim tensor.
  m.def("mmd(Tensor x, Tensor y, Tensor sigma2, Tensor weights, str estimator) -> Tensor");
  // sigma2 must be positive and finite, weights finite and non-negative.
  // (mmd, d(mmd)/dx, d(mmd)/dy) in one pass: what the autograd path runs when x or y needs grad.
  // A gradient not asked for (grad_x / grad_y false) is not computed: an empty (0,) tensor.
  m.def("_mmd_with_grad(Tensor x, Tensor y, Tensor sigma2, Tensor weights, str estimator, "
        "bool grad_x=True, bool grad_y=True) -> (Tensor, Tensor, Tensor)");
  // grad * d(mmd)/dx, grad * d(mmd)/dy (empty where not asked for); sigma2 and weights are constants.
  m.def("_mmd_backward(Tensor grad, Tensor x, Tensor y, Tensor sigma2, Tensor weights, "
        "str estimator, bool grad_x=True, bool grad_y=True) -> (Tensor, Tensor)");
  // Deep CORAL: (||C_x - C_y||_F^2 / (4 d^2), C_x - C_y), covariances normalised by n - 1.
  m.def("coral(Tensor x, Tensor y) -> (Tensor, Tensor)");
  // Given g = dL/d(C_x - C_y) (d, d), symmetric: (2/(n-1) (x - mean_x) g, -2/(m-1) (y - mean_y) g).
  m.def("_coral_backward(Tensor g, Tensor x, Tensor y) -> (Tensor, Tensor)");
  // Jagged hits -> dense (N, n_cells) images: event e owns hits offsets[e]:offsets[e + 1]; the
  // hits of a cell add up, then times calibration, dead cells and cells below threshold to 0, then
  // normalize in {"none", "log1p", "incident" (/ incident_energy), "sum" (/ image total)}.
  m.def("hits_to_image(Tensor offsets, Tensor cell, Tensor energy, int n_cells, Tensor? calibration, "
        "Tensor? dead, float threshold, str normalize, Tensor? incident_energy) -> Tensor");
  // dL/d(energy) (H,) given grad = dL/d(images) (N, n_cells); the other inputs as in the forward.
  m.def("_hits_to_image_backward(Tensor grad, Tensor offsets, Tensor cell, Tensor energy, int n_cells, "
        "Tensor? calibration, Tensor? dead, float threshold, str normalize, Tensor? incident_energy) "
        "-> Tensor");
  // CaloChallenge-style shower features of images (N, n_cells), layer l owning cells
  // [layer_offsets[l], layer_offsets[l + 1]), cell coordinates coords (n_cells, 2) = (x, y).
  // Returns layer_stats (N, L, 6) = [energy, centroid_x, centroid_y, width_x, width_y, sparsity],
  // event_stats (N, 2) = [total, max_fraction] and max_cell (N,) int64, the first maximal cell.
  m.def("shower_features(Tensor images, int[] layer_offsets, Tensor coords, float threshold) "
        "-> (Tensor, Tensor, Tensor)");
  // d(loss)/d(images) (N, n_cells) from the gradients of layer_stats and event_stats.
  m.def("_shower_features_backward(Tensor grad_layer_stats, Tensor grad_event_stats, Tensor images, "
        "int[] layer_offsets, Tensor coords, Tensor layer_stats, Tensor event_stats, Tensor max_cell) -> Tensor");
}
