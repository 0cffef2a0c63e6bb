// Argument checks and error reporting of hits_to_image, shared by the CPU and CUDA kernels.
#include "sim2real_fast/hits_to_image.h"

#include <ATen/ops/nonzero.h>
#include <c10/util/Exception.h>

namespace sim2real_fast::hits {
namespace {

Normalize parse_normalize(const char* op, std::string_view name) {
  if (name == "none") return Normalize::kNone;
  if (name == "log1p") return Normalize::kLog1p;
  if (name == "incident") return Normalize::kIncident;
  if (name == "sum") return Normalize::kSum;
  TORCH_CHECK_VALUE(false, op, ": normalize must be one of 'none', 'log1p', 'incident', 'sum', got '",
                    std::string(name), "'");
}

at::Tensor per_cell(const char* op, const char* name, const at::Tensor& t, int64_t n_cells,
                    at::ScalarType dtype, const at::Tensor& energy) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n_cells, op, ": ", name, " must be 1-D of n_cells = ",
                    n_cells, " entries, got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == energy.device(), op, ": ", name, " must be on ", energy.device(),
                    " like energy, got ", t.device());
  return t.contiguous();
}

}  // namespace

Args check_args(const char* op, const at::Tensor& offsets, const at::Tensor& cell,
                const at::Tensor& energy, int64_t n_cells,
                const c10::optional<at::Tensor>& calibration, const c10::optional<at::Tensor>& dead,
                double threshold, std::string_view normalize,
                const c10::optional<at::Tensor>& incident_energy) {
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.size(0) >= 1, op,
                    ": offsets must be 1-D with N + 1 >= 1 entries, got shape ", offsets.sizes());
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong, op, ": offsets must be int64, got ",
                   offsets.scalar_type());
  TORCH_CHECK_VALUE(cell.dim() == 1, op, ": cell must be 1-D (one index per hit), got shape ", cell.sizes());
  TORCH_CHECK_TYPE(cell.scalar_type() == at::kInt || cell.scalar_type() == at::kLong, op,
                   ": cell must be int32 or int64, got ", cell.scalar_type());
  TORCH_CHECK_VALUE(energy.dim() == 1, op, ": energy must be 1-D (one value per hit), got shape ",
                    energy.sizes());
  TORCH_CHECK_TYPE(energy.scalar_type() == at::kFloat || energy.scalar_type() == at::kDouble, op,
                   ": energy must be float32 or float64, got ", energy.scalar_type());
  TORCH_CHECK_VALUE(cell.size(0) == energy.size(0), op,
                    ": cell and energy must have one entry per hit, got ", cell.size(0), " and ",
                    energy.size(0));
  TORCH_CHECK_VALUE(offsets.device() == energy.device() && cell.device() == energy.device(), op,
                    ": offsets, cell and energy must be on one device, got ", offsets.device(), ", ",
                    cell.device(), " and ", energy.device());
  TORCH_CHECK_VALUE(n_cells >= 0, op, ": n_cells must be >= 0, got ", n_cells);

  Args args;
  args.offsets = offsets.contiguous();
  args.cell = cell.contiguous();
  args.energy = energy.contiguous();
  args.n_events = offsets.size(0) - 1;
  args.n_hits = energy.size(0);
  args.n_cells = n_cells;
  args.threshold = threshold;
  args.normalize = parse_normalize(op, normalize);
  if (calibration.has_value()) {
    args.calibration = per_cell(op, "calibration", *calibration, n_cells, energy.scalar_type(), energy);
  }
  if (dead.has_value()) {
    args.dead = per_cell(op, "dead", *dead, n_cells, at::kBool, energy);
  }
  TORCH_CHECK_VALUE(incident_energy.has_value() == (args.normalize == Normalize::kIncident), op,
                    ": incident_energy must be given exactly when normalize is 'incident'");
  if (incident_energy.has_value()) {
    const at::Tensor& inc = *incident_energy;
    TORCH_CHECK_VALUE(inc.dim() == 1 && inc.size(0) == args.n_events, op,
                      ": incident_energy must be (N,) = (", args.n_events, ",), got shape ", inc.sizes());
    TORCH_CHECK_TYPE(inc.scalar_type() == energy.scalar_type(), op, ": incident_energy must be ",
                     energy.scalar_type(), " like energy, got ", inc.scalar_type());
    TORCH_CHECK_VALUE(inc.device() == energy.device(), op, ": incident_energy must be on ",
                      energy.device(), ", got ", inc.device());
    args.incident = inc.contiguous();
  }
  return args;
}

at::Tensor check_grad(const char* op, const at::Tensor& grad, const Args& args) {
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == args.n_events && grad.size(1) == args.n_cells, op,
                    ": grad must be (N, n_cells) = (", args.n_events, ", ", args.n_cells, "), got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == args.energy.scalar_type() && grad.device() == args.energy.device(), op,
                   ": grad must be ", args.energy.scalar_type(), " on ", args.energy.device(), ", got ",
                   grad.scalar_type(), " on ", grad.device());
  return grad.contiguous();
}

void throw_bad_event(const char* op, const Args& args, int64_t event) {
  const at::Tensor bounds = args.offsets.narrow(0, event, 2).cpu();
  const int64_t a = bounds.const_data_ptr<int64_t>()[0];
  const int64_t b = bounds.const_data_ptr<int64_t>()[1];
  TORCH_CHECK_VALUE(0 <= a && a <= b && b <= args.n_hits, op, ": event ", event, ": offsets[", event,
                    "] = ", a, ", offsets[", event + 1, "] = ", b,
                    "; offsets must be non-decreasing and within [0, ", args.n_hits,
                    "] (the number of hits)");
  const at::Tensor cells = args.cell.narrow(0, a, b - a).cpu().to(at::kLong);
  const at::Tensor bad = at::nonzero(cells.lt(0).logical_or_(cells.ge(args.n_cells)));
  TORCH_CHECK(bad.numel() > 0, op, ": internal error: event ", event, " was flagged but looks valid");
  const int64_t i = bad.const_data_ptr<int64_t>()[0];
  TORCH_CHECK_INDEX(false, op, ": event ", event, ": cell index ", cells.const_data_ptr<int64_t>()[i],
                    " of hit ", a + i, " is out of range [0, ", args.n_cells, ")");
}

}  // namespace sim2real_fast::hits
