// evo export: a run's answer (its final ensemble or final model) or best individual (or any DNA
// with its weights) as an ONNX model or a PyTorch module, to run elsewhere. Not the writing itself (src/export/, evo/export.h):
// this file picks the net, loads the data set its standardisation comes from, and names the
// output files.
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

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
  bool single = false;  // the final model alone, even when the run's answer is the ensemble
};

// A name Python can import for the module of `id`: ids are digits and dashes
// ("1733650000123-4"), which `import` cannot take, so "evo_1733650000123_4"; every character
// outside [A-Za-z0-9_] becomes '_', and a leading digit gets the "evo_" prefix.
std::string python_module_name(const std::string& id) {
  std::string name;
  for (char c : id) name += std::isalnum(static_cast<unsigned char>(c)) || c == '_' ? c : '_';
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) name = "evo_" + name;
  return name;
}

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
  // The nets to write: one, or the final ensemble's members (the run's answer), each a DNA file
  // and a weights file.
  struct Source {
    std::string id, dna_path, weights_path;
  };
  std::vector<Source> sources;
  std::string id;
  double val_accuracy = NAN;
  bool from_final = false;
  if (!fs::exists(a.source))
    throw UsageError(a.source + ": no such run folder or DNA file");
  if (fs::is_directory(a.source)) {
    // A run folder: its data set, seed and split from run.json (they decide the standardisation),
    // and its answer (the final ensemble or the final model), or else its best living
    // individual, unless --id names another.
    const RunData run = run_data(a.source, cmd, {a.data, a.seed, a.val_fraction, a.max_train});
    a.data = run.data;
    a.seed = run.seed;
    a.val_fraction = run.val_fraction;
    a.max_train = run.max_train;
    if (!a.weights.empty())
      throw UsageError("--weights is for a DNA file; a run folder has each individual's weights "
                       "(pick one with --id)");
    if (!a.id.empty() && a.single)
      throw UsageError("--single picks the final model over the final ensemble; --id already "
                       "names one individual of the search");
    // A run with a final phase: its answer is the final phase's (the search's own individuals,
    // judged after 1,000 steps, are a --id away).
    FinalEnsemble ensemble;
    const std::vector<FinalModel> finals =
        a.id.empty() ? read_final_phase(a.source, &ensemble) : std::vector<FinalModel>{};
    const FinalModel* chosen = nullptr;
    for (const FinalModel& m : finals)
      if (!m.failed && (!chosen || m.val > chosen->val)) chosen = &m;
    auto final_source = [&](const FinalModel& m) {
      const std::string dir = a.source + "/final/" + m.folder;
      return Source{m.id, dir + "/dna.json", dir + "/weights.evow"};
    };
    if (chosen && ensemble.answer && !a.single) {
      from_final = true;
      for (const FinalModel& m : finals)
        if (!m.failed) sources.push_back(final_source(m));
      id = "ensemble";
      val_accuracy = ensemble.val;
    } else if (chosen) {
      from_final = true;
      sources.push_back(final_source(*chosen));
      id = chosen->id;
      val_accuracy = chosen->val;
    } else {
      Source src;
      std::tie(src.id, val_accuracy, src.dna_path, src.weights_path) =
          pick_individual(a.source, a.id);
      id = src.id;
      sources.push_back(src);
    }
  } else {
    if (a.weights.empty())
      throw UsageError("a DNA file needs its trained weights: --weights FILE (evo train writes "
                       "weights.evow)");
    if (!a.id.empty()) throw UsageError("--id picks an individual of a run folder, not of a DNA file");
    if (a.single) throw UsageError("--single is for a run folder whose answer is an ensemble");
    id = fs::path(a.source).stem().string();
    sources.push_back({id, a.source, a.weights});
  }
  const bool ensemble = sources.size() > 1;

  std::string out = a.out;
  if (out.empty()) out = a.format == "onnx" ? id + ".onnx" : python_module_name(id) + ".py";
  if (a.format == "onnx" && !onnx_export_available())
    throw ExportError(kOnnxUnavailable);  // before the data set is loaded for nothing
  // Nothing is written before everything has been read and checked; the DNAs first (a bad one
  // is said before the data set loads for nothing).
  std::vector<Dna> dnas;
  for (const Source& src : sources) dnas.push_back(load_dna(src.dna_path));
  const Dataset data = load_data({a.data, a.seed, a.val_fraction, a.max_train});
  std::vector<CompiledDna> plans;
  std::vector<Weights> weights;
  for (std::size_t k = 0; k < sources.size(); ++k) {
    plans.push_back(compile(dnas[k], data.train.h, data.train.w, data.train.c, data.classes));
    weights.push_back(load_weights(sources[k].weights_path, plans.back(), Device::cpu()));
  }
  std::vector<ExportNet> nets;
  int64_t params = 0;
  for (std::size_t k = 0; k < sources.size(); ++k) {
    nets.push_back({&plans[k], &weights[k], sources[k].id});
    params += plans[k].param_count;
  }
  const ExportInfo info{id, data.name, data.mean, data.std, data.class_names};

  nlohmann::json files = nlohmann::json::array();
  if (a.format == "onnx") {
    export_onnx(nets, info, out);
    files.push_back(out);
  } else {
    const std::string st = stem_path(out) + ".safetensors";
    export_pytorch(nets, info, out, st);
    files.push_back(out);
    files.push_back(st);
  }
  nlohmann::json members = nlohmann::json::array();
  for (const Source& src : sources) members.push_back(src.id);
  if (json) {
    print_json({{"id", id},
                // the final phase's ensemble or model, or a search's individual
                {"model", ensemble ? "ensemble" : from_final ? "final" : "search"},
                {"members", members},
                {"format", a.format},
                {"files", files},
                {"data", data.name},
                {"input", {data.train.c, data.train.h, data.train.w}},
                {"classes", data.classes},
                {"mean", data.mean},  // the standardisation inside the model, in pixel units
                {"std", data.std},
                {"parameters", params},
                {"val_accuracy", std::isfinite(val_accuracy) ? nlohmann::json(val_accuracy)
                                                             : nlohmann::json()}});
  } else {
    std::string what = id;
    if (ensemble) {
      what = "the run's answer, the final ensemble of " + std::to_string(sources.size()) + " (";
      for (std::size_t k = 0; k < sources.size(); ++k) what += (k ? ", " : "") + sources[k].id;
      what += "; --single for the final model alone)";
    } else if (from_final) {
      what += ", the run's final model (the final phase's; --id ID for an individual of the "
              "search)";
    }
    std::printf("exported %s (%lld parameters%s) as %s: %s\n", what.c_str(),
                static_cast<long long>(params),
                std::isfinite(val_accuracy)
                    ? (", val " + std::to_string(100 * val_accuracy).substr(0, 5) + "%").c_str()
                    : "",
                a.format.c_str(), files.size() == 1
                                      ? out.c_str()
                                      : (out + " + " + files[1].get<std::string>()).c_str());
    std::printf("input: float32 [N, %d, %d, %d], pixel / 255 (standardised inside the model); "
                "outputs: logits%s%s\n",
                data.train.c, data.train.h, data.train.w,
                a.format == "onnx" ? " and probabilities" : "",
                ensemble ? " (the log of the members' mean softmax)" : "");
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
                  "A run folder (its answer when its search had a final phase: the final ensemble "
                  "as one model, or the final model; else its best individual by validation "
                  "accuracy) or a DNA file")
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
  cmd->add_flag("--single", a->single,
               "A run whose answer is its final ensemble (the final phase's models averaged, when "
               "that beats the best of them on the validation set): write the final model alone");
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
