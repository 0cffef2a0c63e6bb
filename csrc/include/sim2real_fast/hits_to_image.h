// hits_to_image: jagged calorimeter hits -> dense (N, n_cells) images, fused with calibration,
// dead-cell mask, zero suppression and normalisation. Shared by the CPU and CUDA kernels:
// the option parsing, the argument checks and the error for the first bad event.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string_view>

#include "sim2real_fast/hits_to_image_math.h"

namespace sim2real_fast::hits {

// Checked, contiguous arguments of one call.
struct Args {
  at::Tensor offsets;      // (N + 1,) int64
  at::Tensor cell;         // (H,) int32 or int64
  at::Tensor energy;       // (H,) float32 or float64
  at::Tensor calibration;  // (n_cells,) energy dtype, or undefined
  at::Tensor dead;         // (n_cells,) bool, or undefined
  at::Tensor incident;     // (N,) energy dtype, or undefined
  int64_t n_events;
  int64_t n_hits;
  int64_t n_cells;
  double threshold;
  Normalize normalize;
};

// Checks shapes, dtypes and devices (never values: those are checked by the kernels while they
// run) and makes every tensor contiguous. `op` names the op in the messages.
Args check_args(const char* op, const at::Tensor& offsets, const at::Tensor& cell,
                const at::Tensor& energy, int64_t n_cells,
                const c10::optional<at::Tensor>& calibration, const c10::optional<at::Tensor>& dead,
                double threshold, std::string_view normalize,
                const c10::optional<at::Tensor>& incident_energy);

// Checks the backward's incoming gradient (N, n_cells) against the call; returns it contiguous.
at::Tensor check_grad(const char* op, const at::Tensor& grad, const Args& args);

// Throws for `event`, the first event a kernel flagged: ValueError for bad offsets, IndexError
// for an out-of-range cell (the message names the event, the hit and the value). Reads the few
// entries it needs from the device.
[[noreturn]] void throw_bad_event(const char* op, const Args& args, int64_t event);

}  // namespace sim2real_fast::hits
