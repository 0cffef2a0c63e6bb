// Gradient reversal forward: a copy of x (an op's output must not alias its input), on any device.
// The backward, -alpha * grad, is registered from Python (sim2real_fast/ops/grad_reverse.py).
#include <ATen/ATen.h>
#include <torch/library.h>

namespace sim2real_fast {
namespace {

at::Tensor grad_reverse(const at::Tensor& x, double alpha) { return x.clone(at::MemoryFormat::Preserve); }

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CompositeExplicitAutograd, m) { m.impl("grad_reverse", &grad_reverse); }

}  // namespace sim2real_fast
