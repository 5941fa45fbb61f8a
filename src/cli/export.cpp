// evo export: a run's final model or best individual (or any DNA with its weights) as an ONNX
// model or a PyTorch module, to run elsewhere. Not the writing itself (src/export/, evo/export.h):
// this file picks the net, loads the data set its standardisation comes from, and names the
// output files.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <tuple>

#include "cli.h"
#include "evo/data.h"
#include "evo/dna.h"
#include "evo/error.h"
#include "evo/export.h"
#include "evo/population.h"
#include "evo/search.h"

namespace evo::cli {

namespace {

namespace fs = std::filesystem;

struct ExportArgs {
  std::string source, weights, id, format = "onnx", out, data = "fashion-mnist";
  double val_fraction = 0.1;
  int max_train = 0;
  uint64_t seed = 0;
};

// The path without its last extension ("model.py" -> "model").
std::string stem_path(const std::string& path) {
  const fs::path p(path);
  return (p.parent_path() / p.stem()).string();
}

// A run's individual of the search: `id`, or else its best living one by validation accuracy.
// Returns its id, validation accuracy, DNA path and weights path.
std::tuple<std::string, double, std::string, std::string> pick_individual(
    const std::string& run_dir, const std::string& id) {
  Population pop(run_dir);
  std::vector<std::string> damaged;
  const std::vector<IndividualRecord> all = pop.all_individuals(&damaged);
  print_damaged("evo export", damaged);
  const IndividualRecord* pick = nullptr;
  for (const IndividualRecord& r : all) {
    if (!id.empty() ? r.id == id
                    : (r.alive() && !r.failed && (!pick || r.fitness > pick->fitness)))
      pick = &r;
  }
  if (!pick)
    throw Error(id.empty() ? "run " + run_dir + " has no trained living individual yet"
                           : "run " + run_dir + " has no individual '" + id +
                                 "' (evo report lists them)");
  if (pick->failed)
    throw Error("individual " + pick->id + " failed in training (" + pick->failure +
                "): it has no weights worth exporting");
  return {pick->id, pick->fitness, pop.dna_path(pick->id), pop.weights_path(pick->id)};
}

int run_export(ExportArgs a, bool json, const CLI::App& cmd) {
  std::string dna_path = a.source, weights_path = a.weights, id;
  double val_accuracy = NAN;
  bool from_final = false;
  if (fs::is_directory(a.source)) {
    // A run folder: its data set, seed and split from run.json (they decide the standardisation),
    // and its final model, or else its best living individual, unless --id names another.
    const RunData run = run_data(a.source, cmd, {a.data, a.seed, a.val_fraction, a.max_train});
    a.data = run.data;
    a.seed = run.seed;
    a.val_fraction = run.val_fraction;
    a.max_train = run.max_train;
    if (!a.weights.empty())
      throw UsageError("--weights is for a DNA file; a run folder has each individual's weights "
                       "(pick one with --id)");
    // A run with a final phase: its final model is the run's answer (the search's own
    // individuals, judged after 1,000 steps, are a --id away).
    const std::vector<FinalModel> finals = a.id.empty() ? read_final_phase(a.source)
                                                        : std::vector<FinalModel>{};
    const FinalModel* chosen = nullptr;
    for (const FinalModel& m : finals)
      if (!m.failed && (!chosen || m.val > chosen->val)) chosen = &m;
    if (chosen) {
      id = chosen->id;
      val_accuracy = chosen->val;
      from_final = true;
      dna_path = a.source + "/final/" + chosen->folder + "/dna.json";
      weights_path = a.source + "/final/" + chosen->folder + "/weights.evow";
    } else {
      std::tie(id, val_accuracy, dna_path, weights_path) = pick_individual(a.source, a.id);
    }
  } else {
    if (a.weights.empty())
      throw UsageError("a DNA file needs its trained weights: --weights FILE (evo train writes "
                       "weights.evow)");
    if (!a.id.empty()) throw UsageError("--id picks an individual of a run folder, not of a DNA file");
    id = fs::path(a.source).stem().string();
  }

  std::string out = a.out;
  if (out.empty()) out = id + (a.format == "onnx" ? ".onnx" : ".py");
  if (a.format == "onnx" && !onnx_export_available())
    throw ExportError(kOnnxUnavailable);  // before the data set is loaded for nothing
  // Nothing is written before everything has been read and checked.
  const Dna dna = load_dna(dna_path);
  const Dataset data = load_data({a.data, a.seed, a.val_fraction, a.max_train});
  const CompiledDna plan = compile(dna, data.train.h, data.train.w, data.train.c, data.classes);
  const Weights weights = load_weights(weights_path, plan, Device::cpu());
  const ExportInfo info{id, data.name, data.mean, data.std, data.class_names};

  nlohmann::json files = nlohmann::json::array();
  if (a.format == "onnx") {
    export_onnx(plan, weights, info, out);
    files.push_back(out);
  } else {
    const std::string st = stem_path(out) + ".safetensors";
    export_pytorch(plan, weights, info, out, st);
    files.push_back(out);
    files.push_back(st);
  }
  if (json) {
    print_json({{"id", id},
                {"model", from_final ? "final" : "search"},  // the final phase's, or a search's
                {"format", a.format},
                {"files", files},
                {"data", data.name},
                {"input", {data.train.c, data.train.h, data.train.w}},
                {"classes", data.classes},
                {"mean", data.mean},  // the standardisation inside the model, in pixel units
                {"std", data.std},
                {"parameters", plan.param_count},
                {"val_accuracy", std::isfinite(val_accuracy) ? nlohmann::json(val_accuracy)
                                                             : nlohmann::json()}});
  } else {
    std::printf("exported %s%s (%lld parameters%s) as %s: %s\n", id.c_str(),
                from_final ? ", the run's final model (the final phase's; --id ID for an "
                             "individual of the search)"
                           : "",
                static_cast<long long>(plan.param_count),
                std::isfinite(val_accuracy)
                    ? (", val " + std::to_string(100 * val_accuracy).substr(0, 5) + "%").c_str()
                    : "",
                a.format.c_str(), files.size() == 1
                                      ? out.c_str()
                                      : (out + " + " + files[1].get<std::string>()).c_str());
    std::printf("input: float32 [N, %d, %d, %d], pixel / 255 (standardised inside the model); "
                "outputs: logits%s\n",
                data.train.c, data.train.h, data.train.w,
                a.format == "onnx" ? " and probabilities" : "");
  }
  return 0;
}

}  // namespace

Command add_export_command(CLI::App& app, const Globals& globals) {
  const auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export", "Write a run's final model or best net (or a DNA with its weights) as ONNX or "
                "PyTorch");
  cmd->add_option("source", a->source,
                  "A run folder (its final model when its search had a final phase, else its best "
                  "individual by validation accuracy) or a DNA file")
      ->required();
  cmd->add_option("--format", a->format,
                  "onnx (opset 13: ONNX Runtime, TensorRT, ...) or pytorch (a .py file defining "
                  "EvoNet + .safetensors weights beside it)")
      ->check(CLI::IsMember({"onnx", "pytorch"}))
      ->capture_default_str();
  cmd->add_option("-o,--out", a->out,
                  "Output file (default: ID.onnx or ID.py in the current folder; PyTorch weights "
                  "go beside it as NAME.safetensors)");
  cmd->add_option("--id", a->id, "A run's individual other than the one exported by default (an "
                  "individual of the search, never a final model)");
  cmd->add_option("--weights", a->weights, "For a DNA file: its trained weights (weights.evow)");
  cmd->add_option("--data", a->data,
                  "The data set it was trained on (its mean and std standardise the input; "
                  "default: the run's)")
      ->capture_default_str();
  add_seed_option(cmd, a->seed, "For a DNA file: the seed used in training (it chose the val "
                                "split, which the standardisation leaves out)");
  cmd->add_option("--val-fraction", a->val_fraction, "For a DNA file: as in training")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  cmd->add_option("--max-train", a->max_train,
                  "For a DNA file: as in training (a capped training set chose the mean and std)")
      ->check(CLI::Range(1, 1 << 30));
  return {cmd, [a, cmd, &globals] { return run_export(*a, globals.json, *cmd); }};
}

}  // namespace evo::cli
