// libs2r_infer: the C interface of s2r_infer.h over libtorch's TorchScript loader, on the CPU.
#include "s2r_infer.h"

#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/serialization/import.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>

#define S2R_EXPORT __attribute__((visibility("default")))

struct s2r_model {
  torch::jit::Module module;
  std::string path;
  long long n_cells;
  long long n_classes;
};

namespace {

// The line of a libtorch message that says what went wrong: TorchScript interpreter errors end with
// "RuntimeError: <reason>" after a traceback; others say it on their first line.
std::string one_line(const std::exception &error) {
  const auto *c10_error = dynamic_cast<const c10::Error *>(&error);
  std::istringstream text(c10_error ? c10_error->what_without_backtrace() : error.what());
  std::string line, first, reason;
  while (std::getline(text, line)) {
    if (first.empty() && line.find_first_not_of(" \t") != std::string::npos) first = line;
    if (line.rfind("RuntimeError: ", 0) == 0) reason = line.substr(14);
  }
  return reason.empty() ? first : reason;
}

std::string first_sentence(const std::string &text) { return text.substr(0, text.find(". ")); }

void set_error(char *error, unsigned long error_size, const std::string &message) {
  if (error && error_size > 0) std::snprintf(error, error_size, "%s", message.c_str());
}

std::string shape(const at::Tensor &t) {
  std::ostringstream out;
  out << t.sizes() << " " << t.scalar_type();
  return out.str();
}

// (n, n_classes) float32 probabilities from (n, n_cells) float32 inputs; throws what libtorch throws, or
// std::runtime_error for outputs of another kind or shape.
at::Tensor forward(s2r_model &model, const at::Tensor &inputs) {
  c10::InferenceMode guard;
  c10::IValue result = model.module.forward({inputs});
  if (!result.isTensor()) throw std::runtime_error("returns " + result.tagKind() + ", expected a tensor");
  at::Tensor probs = result.toTensor();
  if (probs.dim() != 2 || probs.size(0) != inputs.size(0) || probs.scalar_type() != at::kFloat)
    throw std::runtime_error("returns " + shape(probs) + " for inputs " + shape(inputs) + ", expected (" +
                             std::to_string(inputs.size(0)) + ", n_classes) Float");
  return probs.contiguous();
}

}  // namespace

extern "C" S2R_EXPORT s2r_model *s2r_load(const char *path, long long n_cells, long long *n_classes, char *error,
                                          unsigned long error_size) {
  if (n_cells <= 0) {
    set_error(error, error_size, std::string(path) + ": n_cells must be positive, got " + std::to_string(n_cells));
    return nullptr;
  }
  auto *model = new s2r_model{torch::jit::Module(), path, n_cells, 0};
  try {
    model->module = torch::jit::load(path, at::kCPU);
    model->module.eval();
  } catch (const std::exception &e) {
    set_error(error, error_size, std::string(path) + ": not a TorchScript model (" + first_sentence(one_line(e)) + ")");
    delete model;
    return nullptr;
  }
  try {
    model->n_classes = forward(*model, at::zeros({2, n_cells}, at::kFloat)).size(1);
  } catch (const std::exception &e) {
    set_error(error, error_size, std::string(path) + ": does not take (N, " + std::to_string(n_cells) +
                                     ") float32 cell energies: " + one_line(e));
    delete model;
    return nullptr;
  }
  *n_classes = model->n_classes;
  return model;
}

extern "C" S2R_EXPORT int s2r_run(s2r_model *model, const float *inputs, long long n, float *outputs, char *error,
                                  unsigned long error_size) {
  if (n == 0) return 0;
  try {
    // A copy: the caller's buffer stays untouched whatever the graph does in place.
    at::Tensor x = at::from_blob(const_cast<float *>(inputs), {n, model->n_cells}, at::kFloat).clone();
    at::Tensor probs = forward(*model, x);
    if (probs.size(1) != model->n_classes)
      throw std::runtime_error("returns " + shape(probs) + ", expected " + std::to_string(model->n_classes) +
                               " classes");
    std::memcpy(outputs, probs.const_data_ptr<float>(), sizeof(float) * n * model->n_classes);
  } catch (const std::exception &e) {
    set_error(error, error_size, model->path + ": " + one_line(e));
    return -1;
  }
  return 0;
}

extern "C" S2R_EXPORT void s2r_free(s2r_model *model) { delete model; }
