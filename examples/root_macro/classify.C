// classify.C: class probabilities from a sim2real_fast TorchScript model for the showers of a ROOT event tree.
//
//   root -b -q 'examples/root_macro/classify.C("sim2real-run/models/mmd.pt", "real.root", "mmd_scores.root")'
//
// Reads the jagged hit branches (cell index, energy in MeV) of every entry, fills dense (N, n_cells) float32
// images batch by batch (hits of one cell add up), runs the model through libs2r_infer.so (libtorch, CPU) and
// writes `out`: tree "results" with one entry per event in the tree's order (a ROOT friend of the event tree),
// branches <stem>_score[n_classes] (float probabilities) and <stem>_pred (int, the most probable class), where
// <stem> is the model file's name (mmd.pt -> mmd_score, as in the run's predictions.root), and TH1D <stem>_pred,
// the events per predicted class. `out` is written to a temporary file and renamed when complete.
// Returns 0, or 1 after a one-line error naming the file (missing model, tree or branch, cells outside
// [0, n_cells), a model that does not take n_cells inputs, bad energies), so `root -b -q` exits with it.
//
// The library is S2R_INFER_LIB if set, else build/libs2r_infer.so next to this macro (make -C examples/root_macro).
// libtorch uses OMP_NUM_THREADS threads (all cores when unset).
#include "s2r_infer.h"

#include <TError.h>
#include <TFile.h>
#include <TH1D.h>
#include <TKey.h>
#include <TString.h>
#include <TSystem.h>
#include <TTree.h>
#include <TTreeFormula.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace s2r_classify {

int fail(const std::string &message) {
  Error("classify", "%s", message.c_str());
  return 1;
}

bool exists(const char *path) {
  return std::string(path).find("://") != std::string::npos || !gSystem->AccessPathName(path);
}

std::string branch_names(TTree *tree) {
  std::string names;
  for (auto *branch : *tree->GetListOfBranches())
    names += (names.empty() ? "" : ", ") + std::string(branch->GetName());
  return names;
}

std::string key_names(TFile &file) {
  std::string names;
  for (auto *key : *file.GetListOfKeys())
    names += (names.empty() ? "" : ", ") + std::string(key->GetName()) + " (" +
             static_cast<TKey *>(key)->GetClassName() + ")";
  return names.empty() ? "none" : names;
}

std::string model_stem(const char *path) {
  std::string stem = gSystem->BaseName(path);
  if (stem.size() > 3 && stem.compare(stem.size() - 3, 3, ".pt") == 0) stem.resize(stem.size() - 3);
  for (char &c : stem)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return stem;
}

// A ROOT file opened without ROOT's own error lines (the caller reports a failure on one line).
std::unique_ptr<TFile> open_quietly(const char *path, const char *mode) {
  const Int_t level = gErrorIgnoreLevel;
  gErrorIgnoreLevel = kFatal;
  std::unique_ptr<TFile> file(TFile::Open(path, mode));
  gErrorIgnoreLevel = level;
  if (file && file->IsZombie()) file.reset();
  return file;
}

}  // namespace s2r_classify

int classify(const char *model_path, const char *events_path, const char *out_path, const char *tree_name = "events",
             Long64_t n_cells = 504, const char *cell_branch = "hit_cell", const char *energy_branch = "hit_energy",
             Long64_t batch_size = 1024) {
  using namespace s2r_classify;
  const char *from_env = gSystem->Getenv("S2R_INFER_LIB");
  const std::string library =
      from_env ? from_env : std::string(gSystem->GetDirName(__FILE__).Data()) + "/build/libs2r_infer.so";
  if (!exists(library.c_str()))
    return fail(library + ": not found; build it with `make -C examples/root_macro PYTHON=<python with torch>` "
                          "or set S2R_INFER_LIB");
  if (gSystem->Load(library.c_str()) < 0) return fail(library + ": cannot be loaded (see the message above)");
  auto load = reinterpret_cast<s2r_load_fn>(gSystem->DynFindSymbol(library.c_str(), "s2r_load"));
  auto run = reinterpret_cast<s2r_run_fn>(gSystem->DynFindSymbol(library.c_str(), "s2r_run"));
  auto free_model = reinterpret_cast<s2r_free_fn>(gSystem->DynFindSymbol(library.c_str(), "s2r_free"));
  if (!load || !run || !free_model) return fail(library + ": does not export s2r_load, s2r_run and s2r_free");
  if (batch_size < 1) return fail("batch_size must be at least 1, got " + std::to_string(batch_size));

  if (!exists(model_path)) return fail(std::string(model_path) + ": model file not found");
  char error[1024] = "";
  long long n_classes = 0;
  std::unique_ptr<s2r_model, s2r_free_fn> model(load(model_path, n_cells, &n_classes, error, sizeof error),
                                                free_model);
  if (!model) return fail(error);

  if (!exists(events_path)) return fail(std::string(events_path) + ": events file not found");
  auto events = open_quietly(events_path, "READ");
  if (!events) return fail(std::string(events_path) + ": cannot be opened as a ROOT file");
  auto *tree = events->Get<TTree>(tree_name);
  if (!tree)
    return fail(std::string(events_path) + ": no tree '" + tree_name + "' (keys: " + key_names(*events) + ")");
  const std::string where = std::string(events_path) + ", tree '" + tree_name + "'";
  for (const char *name : {cell_branch, energy_branch})
    if (!tree->FindBranch(name) && !tree->FindLeaf(name))
      return fail(where + ": no branch '" + name + "' (branches: " + branch_names(tree) + ")");
  TTreeFormula cells("s2r_cells", cell_branch, tree), energies("s2r_energies", energy_branch, tree);
  if (!cells.GetNdim() || !energies.GetNdim())
    return fail(where + ": cannot read " + cell_branch + " and " + energy_branch);
  if (!cells.IsInteger())
    return fail(where + ": branch '" + cell_branch + "' holds floating-point values, expected integer cell indices");

  const std::string stem = model_stem(model_path);
  const TString temporary = TString::Format("%s.tmp%d", out_path, gSystem->GetPid());
  auto out = open_quietly(temporary, "RECREATE");
  if (!out) return fail(std::string(out_path) + ": cannot be written");
  auto discard = [&](const std::string &message) {
    out->Close();
    gSystem->Unlink(temporary);
    return fail(message);
  };
  std::vector<float> scores(n_classes);
  Int_t pred = 0;
  auto *results = new TTree("results", TString::Format("%s class probabilities", stem.c_str()));
  results->Branch((stem + "_score").c_str(), scores.data(),
                  TString::Format("%s_score[%lld]/F", stem.c_str(), n_classes));
  results->Branch((stem + "_pred").c_str(), &pred, (stem + "_pred/I").c_str());
  auto *classes = new TH1D((stem + "_pred").c_str(), (stem + ": events per predicted class;class;events").c_str(),
                           n_classes, -0.5, n_classes - 0.5);

  const Long64_t n_events = tree->GetEntries();
  std::vector<float> images(batch_size * n_cells), probs(batch_size * n_classes);
  for (Long64_t start = 0; start < n_events; start += batch_size) {
    const Long64_t n = std::min(batch_size, n_events - start);
    std::fill(images.begin(), images.begin() + n * n_cells, 0.0f);
    for (Long64_t k = 0; k < n; ++k) {
      const Long64_t entry = start + k;
      if (tree->LoadTree(entry) < 0) return discard(where + ": entry " + std::to_string(entry) + " cannot be read");
      const Int_t n_hits = cells.GetNdata();
      if (energies.GetNdata() != n_hits)
        return discard(where + ": entry " + std::to_string(entry) + " has " + std::to_string(n_hits) + " " +
                       cell_branch + " values but " + std::to_string(energies.GetNdata()) + " " + energy_branch);
      for (Int_t j = 0; j < n_hits; ++j) {
        const Long64_t cell = cells.EvalInstance64(j);
        const double energy = energies.EvalInstance(j);
        if (cell < 0 || cell >= n_cells)
          return discard(where + ": entry " + std::to_string(entry) + " has " + cell_branch + " " +
                         std::to_string(cell) + " outside [0, " + std::to_string(n_cells) +
                         "): pass the model's n_cells (its geometry's cell count)");
        if (!std::isfinite(energy) || energy < 0)
          return discard(where + ": entry " + std::to_string(entry) + " has " + energy_branch + " " +
                         TString::Format("%g", energy).Data() + ", expected finite MeV >= 0");
        images[k * n_cells + cell] += static_cast<float>(energy);
      }
    }
    if (run(model.get(), images.data(), n, probs.data(), error, sizeof error) != 0) return discard(error);
    for (Long64_t k = 0; k < n; ++k) {
      const float *row = probs.data() + k * n_classes;
      std::copy(row, row + n_classes, scores.begin());
      pred = static_cast<Int_t>(std::max_element(row, row + n_classes) - row);
      results->Fill();
      classes->Fill(pred);
    }
  }
  out->Write(nullptr, TObject::kOverwrite);
  const bool written = !out->TestBit(TFile::kWriteError);
  out->Close();
  if (!written || gSystem->Rename(temporary, out_path) != 0) {
    gSystem->Unlink(temporary);
    return fail(std::string(out_path) + ": cannot be written (" + (written ? "renaming " : "writing ") +
                temporary.Data() + " failed)");
  }
  printf("classify: %lld events of %s -> %s (tree results: %s_score[%lld], %s_pred)\n", n_events, where.c_str(),
         out_path, stem.c_str(), n_classes, stem.c_str());
  return 0;
}
