// evo retrain: the last step of a search. Takes a run's top K individuals by validation accuracy,
// trains each further (from its inherited weights or from scratch) on one device or on several
// GPUs data-parallel, and saves each as DNA + weights + metrics under RUN_DIR/final/, with their
// test accuracies before and after and the averaged-softmax ensemble's in
// RUN_DIR/final/retrain.json (which `evo report` shows). Not the training (train.h) nor the
// search: the population is only read.
//
// The paper (Real et al. 2017, section 5) reports its best model and the ensemble of its top two
// (94.6% and 95.6% on CIFAR-10): hence K = 2 by default.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numbers>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "evo/data.h"
#include "evo/dna.h"
#include "evo/io.h"
#include "evo/population.h"
#include "evo/search.h"
#include "evo/train.h"

namespace evo::cli {

namespace {

struct RetrainArgs {
  std::string run_dir, data = "fashion-mnist", from = "weights", augment = "run";
  std::string lr_scaling = "linear", lr_decay = "cosine", keep = "best";
  PlaceArgs place;
  int top = 2;
  int steps = 25600;
  int batch = 50;
  int periods = 10;  // validation checks (and learning-rate levels) over the steps
  uint64_t seed = 0;
  bool force = false;  // replace what RUN_DIR/final/ holds
};

// The learning rate's factor in period p of n: cosine decay (Loshchilov & Hutter 2017) held
// constant within each period, at the period's midpoint, so that a period runs as one graph:
// 0.976, 0.905, ..., 0.024 of the DNA's rate for n = 10.
double decay_factor(const std::string& rule, int p, int n) {
  if (rule == "none") return 1.0;
  return 0.5 * (1.0 + std::cos(std::numbers::pi * (p + 0.5) / n));
}

// One retrained individual, as retrain.json and the summary print it.
struct Retrained {
  std::string id, folder;
  int64_t parameters = 0;
  double search_val = NAN;                // fitness recorded by the search
  double val_before = NAN, test_before = NAN;  // its search weights, measured now
  double val_after = NAN, test_after = NAN;
  double train_loss = NAN, seconds = 0, flops = 0;
  int steps = 0;
  int kept_step = 0;  // the steps trained by the weights kept (--keep best: the best validation)
  std::vector<std::pair<int, double>> val_curve;  // (steps, validation accuracy) at each check
  bool failed = false;
  std::string failure;
};

nlohmann::json to_json(const Retrained& r) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  return {{"id", r.id},
          {"folder", r.folder},
          {"parameters", r.parameters},
          {"search_val_accuracy", num(r.search_val)},
          {"val_before", num(r.val_before)},
          {"test_before", num(r.test_before)},
          {"val_after", num(r.val_after)},
          {"test_after", num(r.test_after)},
          {"train_loss", num(r.train_loss)},
          {"steps", r.steps},
          {"kept_step", r.kept_step},
          {"val_curve", r.val_curve},
          {"seconds", r.seconds},
          {"train_flops", r.flops},
          {"failed", r.failed},
          {"failure", r.failure}};
}

int run_retrain(const RetrainArgs& a, bool json, const CLI::App& cmd) {
  const TrainPlace place = resolve_place(a.place, cmd);
  const Device device = place.first();
  Population pop(a.run_dir);  // throws a UsageError when it is not a run folder
  const RunData run = run_data(a.run_dir, cmd, {a.data, a.seed, 0.1});
  // RUN_DIR/final/ holds one answer: a search's final phase (the run's answer, what evo export
  // writes) or an earlier retrain. Replacing either takes --force, before anything is trained.
  const std::string summary_path =
      (std::filesystem::path(a.run_dir) / "final" / "retrain.json").string();
  if (!a.force && std::filesystem::exists(summary_path)) {
    bool search_phase = false;
    try {
      search_phase = !read_final_phase(a.run_dir).empty();
    } catch (const Error&) {
      // damaged: still something a user may want kept
    }
    throw UsageError(a.run_dir + "/final/ already holds " +
                     (search_phase ? std::string("the search's final phase (the run's answer, "
                                                 "what evo export writes)")
                                   : std::string("an earlier evo retrain")) +
                     ": --force replaces it (copy the folder aside first to keep it)");
  }

  // The top K as `evo best` ranks them: alive, not failed, by validation accuracy.
  std::vector<std::string> damaged;
  std::vector<IndividualRecord> alive;
  for (IndividualRecord& r : pop.all_individuals(&damaged))
    if (r.alive() && !r.failed && std::isfinite(r.fitness)) alive.push_back(std::move(r));
  print_damaged("evo retrain", damaged);
  std::stable_sort(alive.begin(), alive.end(),
                   [](const auto& x, const auto& y) { return x.fitness > y.fitness; });
  if (alive.empty())
    throw Error("run " + a.run_dir + " has no trained individual to retrain (every alive one "
                "failed, or the search has not finished a child yet)");
  const int k = std::min<int>(a.top, int(alive.size()));
  if (!json && k < a.top)
    std::fprintf(stderr, "evo retrain: the run has %d trained individuals, fewer than --top %d\n",
                 k, a.top);

  const Dataset data = load_data(run);
  Context ctx(device, run.seed);
  const DeviceDataset dev = DeviceDataset::upload(data, device);
  const std::string final_dir = (std::filesystem::path(a.run_dir) / "final").string();
  std::filesystem::create_directories(final_dir);

  TrainOptions topts;
  topts.batch = a.batch;
  // The run's own augmentation by default: the nets were selected for it (run.json's "augment";
  // the paper's crops and flips for a run that has no such key).
  bool augment = a.augment == "on";
  if (a.augment == "run") {
    const nlohmann::json st = pop.settings();
    augment = !(st.contains("augment") && st["augment"].is_boolean()) || st["augment"].get<bool>();
  }
  topts.set_augment(augment);
  const int periods = std::min(a.periods, a.steps);

  std::vector<Retrained> done;
  std::vector<double> avg;  // the ensemble's summed test probabilities
  for (int i = 0; i < k; ++i) {
    const IndividualRecord& rec = alive[std::size_t(i)];
    Retrained r;
    r.id = rec.id;
    r.search_val = rec.fitness;
    r.folder = std::to_string(i + 1) + "-" + rec.id;
    const Dna dna = load_dna(pop.dna_path(rec.id));
    const CompiledDna plan = compile(dna, data.train.h, data.train.w, data.train.c, data.classes);
    r.parameters = plan.param_count;
    Model eval_model(plan, kEvalBatch, ctx);
    // Its search weights, measured now on the same images as after (the "before" column).
    Weights weights = load_weights(pop.weights_path(rec.id), plan, device);
    eval_model.bind(weights);
    r.val_before = evaluate_model(eval_model, dev, "val", ctx).accuracy();
    r.test_before = evaluate_model(eval_model, dev, "test", ctx).accuracy();
    if (a.from == "scratch") weights = init_weights(plan, ctx);

    const double lr = scaled_learning_rate(dna.learning_rate, a.batch, a.lr_scaling);
    if (!json)
      std::fprintf(stderr, "evo retrain: #%d %s (%lld parameters, validation %.2f%% in the "
                   "search) from %s, %d steps on %s, validation every %d steps\n",
                   i + 1, rec.id.c_str(), static_cast<long long>(plan.param_count),
                   100 * rec.fitness, a.from == "scratch" ? "scratch" : "its weights", a.steps,
                   place.str().c_str(), a.steps / periods);
    Progress progress(a.steps, "#" + std::to_string(i + 1));
    // The steps in `periods` parts, each at its decayed rate, each followed by a validation
    // pass; --keep best keeps the weights of the best one (the starting weights count when they
    // are the search's), on the host between checks.
    std::optional<Weights> best;
    double best_val = -1;
    if (a.from == "weights" && a.keep == "best") {
      best = weights.to(Device::cpu());
      best_val = r.val_before;
    }
    int done_steps = 0;
    for (int p = 0; p < periods && !r.failed; ++p) {
      const int begin = int(int64_t(a.steps) * p / periods);
      topts.steps = int(int64_t(a.steps) * (p + 1) / periods) - begin;
      topts.check_every = std::max(1, std::min(100, topts.steps / 4));
      if (!json)
        topts.on_progress = [&, begin](int step, double loss, double img_s) {
          progress.update(begin + step, loss, img_s, a.batch);
        };
      const float rate = float(lr * decay_factor(a.lr_decay, p, periods));
      const TrainResult tr = train_at(place, plan, weights, data, dev, ctx,
                                      run.seed + uint64_t(i) * 1000003u + uint64_t(p) + 1, topts,
                                      rate);
      done_steps += tr.steps_done;
      r.train_loss = tr.final_loss;
      r.seconds += tr.seconds;
      r.flops += tr.flops;
      r.failed = tr.failed;
      r.failure = tr.failure;
      if (tr.failed) break;
      eval_model.bind(weights);
      const double val = evaluate_model(eval_model, dev, "val", ctx).accuracy();
      r.val_curve.emplace_back(done_steps, val);
      if (a.keep == "best" && val > best_val) {
        best = weights.to(Device::cpu());
        best_val = val;
        r.kept_step = done_steps;
      }
    }
    if (r.failed && !json) progress.finish_line();
    r.steps = done_steps;
    if (a.keep == "last" || !best) r.kept_step = done_steps;
    if (a.keep == "best" && best) weights = best->to(device);

    eval_model.bind(weights);
    r.val_after = evaluate_model(eval_model, dev, "val", ctx).accuracy();
    const EvalResult test = evaluate_model(eval_model, dev, "test", ctx, true);
    r.test_after = test.accuracy();
    if (avg.empty()) avg.assign(test.probabilities.size(), 0.0);
    for (std::size_t j = 0; j < avg.size(); ++j) avg[j] += test.probabilities[j];

    const std::string dir = final_dir + "/" + r.folder;
    std::filesystem::create_directories(dir);
    save_weights(weights, dir + "/weights.evow");
    write_file_atomic(dir + "/dna.json", evo::to_json(dna), "DNA file");
    nlohmann::json metrics = to_json(r);
    metrics["learning_rate"] = lr;
    metrics["batch"] = a.batch;
    metrics["from"] = a.from;
    metrics["device"] = place.str();
    write_file_atomic(dir + "/metrics.json", metrics.dump(2) + "\n", "metrics");
    if (!json)
      std::printf("#%d %s: test %.2f%% -> %.2f%% (validation %.2f%% -> %.2f%%) in %s%s\n", i + 1,
                  rec.id.c_str(), 100 * r.test_before, 100 * r.test_after, 100 * r.val_before,
                  100 * r.val_after, format_duration(r.seconds).c_str(),
                  r.failed ? (", training stopped: " + r.failure).c_str()
                  : r.kept_step < r.steps
                      ? (", kept the weights of step " + std::to_string(r.kept_step)).c_str()
                      : "");
    done.push_back(std::move(r));
  }

  const double ensemble = ensemble_accuracy(avg, data.test.labels, data.classes);
  nlohmann::json summary = {{"run", a.run_dir},
                            {"data", data.name},
                            {"top", k},
                            {"from", a.from},
                            {"steps", a.steps},
                            {"batch", a.batch},
                            {"augment", augment ? "on" : "off"},
                            {"lr_scaling", a.lr_scaling},
                            {"lr_decay", a.lr_decay},
                            {"validation_checks", periods},
                            {"keep", a.keep},
                            {"device", place.str()},
                            {"ensemble_size", k},
                            {"ensemble_test", std::isfinite(ensemble) ? nlohmann::json(ensemble)
                                                                      : nlohmann::json()},
                            {"individuals", nlohmann::json::array()}};
  for (const Retrained& r : done) summary["individuals"].push_back(to_json(r));
  write_file_atomic(final_dir + "/retrain.json", summary.dump(2) + "\n", "retrain summary");
  if (json) {
    print_json(summary);
  } else {
    std::printf("ensemble of %d (averaged softmax): test %.2f%%\n", k, 100 * ensemble);
    std::printf("wrote %s/ (retrain.json, one folder per individual); evo report %s shows them\n",
                final_dir.c_str(), a.run_dir.c_str());
  }
  for (const Retrained& r : done)
    if (r.failed) return 1;
  return 0;
}

}  // namespace

Command add_retrain_command(CLI::App& app, const Globals& globals) {
  const auto a = std::make_shared<RetrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "retrain", "Train a run's top K individuals further and ensemble them (RUN_DIR/final/)");
  cmd->add_option("run_dir", a->run_dir, "Run folder")->required();
  cmd->add_option("--top", a->top, "How many of the best to retrain, 1-100 (the paper's "
                                   "ensemble: 2)")
      ->check(CLI::Range(1, 100))->capture_default_str();
  cmd->add_option("--from", a->from, "weights: continue from the weights the search trained; "
                                     "scratch: fresh weights")
      ->check(CLI::IsMember({"weights", "scratch"}))->capture_default_str();
  cmd->add_option("--steps", a->steps, "SGD steps per individual (the paper: 25,600)")
      ->check(CLI::Range(1, 100000000))->capture_default_str();
  cmd->add_option("--batch", a->batch, "Images per step (global over --gpus), 1-100,000")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_option("--augment", a->augment, "Random pad-4 crops and flips (the paper's): on, off, "
                                           "or run: as the search trained its children")
      ->check(CLI::IsMember({"run", "on", "off"}))->capture_default_str();
  cmd->add_option("--lr-scaling", a->lr_scaling, "linear (the DNA's rate times --batch / 50) or "
                                                 "none")
      ->check(CLI::IsMember({"linear", "none"}))->capture_default_str();
  cmd->add_option("--checks", a->periods, "Validation passes over the steps, 1-1,000 (the "
                                          "learning rate is held within each)")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  cmd->add_option("--lr-decay", a->lr_decay, "cosine: the rate decays to ~0 over the steps, "
                                             "constant within each check's period; none")
      ->check(CLI::IsMember({"cosine", "none"}))->capture_default_str();
  cmd->add_option("--keep", a->keep, "best: the weights of the best validation check (the "
                                     "search's own count); last: the final ones")
      ->check(CLI::IsMember({"best", "last"}))->capture_default_str();
  cmd->add_option("--data", a->data, "The run's data set (default: the one in run.json)");
  add_seed_option(cmd, a->seed, "The run's seed (default: the one in run.json)");
  cmd->add_flag("--force", a->force,
                "Replace what RUN_DIR/final/ holds (a search's final phase or an earlier "
                "retrain); without it, evo retrain refuses");
  add_place_options(cmd, a->place);
  return {cmd, [a, cmd, &globals] { return run_retrain(*a, globals.json, *cmd); }};
}

}  // namespace evo::cli
