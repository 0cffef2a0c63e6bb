// The Python extension module. Importing it runs the static TORCH_LIBRARY registrations of the
// other translation units; build_info() tells how the library was built.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "sim2real_fast compiled operators (registered as torch.ops.sim2real_fast.*)";
  m.def("build_info", [] {
    py::dict info;
#ifdef S2R_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cuda_architectures"] = S2R_CUDA_ARCHS;
    info["torch_version"] = S2R_TORCH_VERSION;
#ifdef _OPENMP
    info["openmp"] = _OPENMP;
#else
    info["openmp"] = 0;
#endif
    return info;
  }, "Build facts: CUDA kernels compiled, CUDA architectures, torch version built against, OpenMP.");
}
