// evo train: trains one DNA on a data set, shows progress, evaluates it on val and test and
// writes OUT/weights.evow, OUT/metrics.json and OUT/dna.json. Not the training (train.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli.h"
#include "evo/data.h"
#include "evo/dna.h"
#include "evo/io.h"
#include "evo/train.h"

namespace evo::cli {

namespace {

struct TrainArgs {
  std::string dna, weights, data = "fashion-mnist", out;
  PlaceArgs place;
  std::string lr_scaling = "linear", lr_schedule = "constant", time_budget;
  int steps = 25600;
  int batch = 50;
  int max_train = 0;  // 0 = the whole training split
  double val_fraction = 0.1;
  uint64_t seed = 0;
  // One spelling with `evo search`: --augment on|off (--no-augment stays as the short form).
  std::string augment = "on";  // pad-4 random crops and flips (He et al. 2016), as the paper
  bool no_augment = false;
};

int run_train(const TrainArgs& cmd, bool json, const CLI::App& app) {
  const TrainPlace place = resolve_place(cmd.place, app);
  const Device device = place.first();
  // The output folder is made (and found usable) before training, not after an hour of it.
  if (!cmd.out.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(cmd.out, ec);
    if (!std::filesystem::is_directory(cmd.out))
      throw UsageError("--out " + cmd.out + ": not a folder and cannot be made one" +
                       (ec ? " (" + ec.message() + ")" : std::string()));
  }
  const Dna dna = load_dna(cmd.dna);
  const Dataset data = load_data({cmd.data, cmd.seed, cmd.val_fraction, cmd.max_train});
  const CompiledDna plan = compile(dna, data.train.h, data.train.w, data.train.c, data.classes);
  if (!json)
    std::fprintf(stderr, "evo train: %s on %s (%d train / %d val / %d test images) on %s: %lld "
                 "parameters, %.1f MFLOPs per image\n",
                 cmd.dna.c_str(), data.name.c_str(), data.train.n, data.val.n, data.test.n,
                 place.str().c_str(), static_cast<long long>(plan.param_count),
                 plan.forward_flops / 1e6);

  Context ctx(device, cmd.seed);
  const DeviceDataset dev = DeviceDataset::upload(data, device);
  Weights weights = cmd.weights.empty() ? init_weights(plan, ctx)
                                        : load_weights(cmd.weights, plan, device);
  const double learning_rate = scaled_learning_rate(dna.learning_rate, cmd.batch, cmd.lr_scaling);

  TrainOptions topts;
  topts.steps = cmd.steps;
  topts.batch = cmd.batch;
  topts.set_augment(cmd.augment == "on" && !cmd.no_augment);
  topts.schedule = parse_lr_schedule(cmd.lr_schedule);
  topts.time_budget = cmd.time_budget.empty() ? 0 : parse_duration(cmd.time_budget, "--time-budget");
  topts.check_every = std::max(1, std::min(100, cmd.steps / 20));
  if (topts.time_budget > 0 && app.count("--steps") == 0) topts.steps = 100000000;
  Progress progress(topts.steps);
  if (topts.time_budget > 0) progress.set_time_budget(topts.time_budget);
  if (!json)
    topts.on_progress = [&](int step, double loss, double img_s) {
      progress.update(step, loss, img_s, cmd.batch);
    };
  const TrainResult tr =
      train_at(place, plan, weights, data, dev, ctx, cmd.seed, topts, float(learning_rate));
  if (tr.failed || topts.time_budget > 0) progress.finish_line();

  Model eval_model(plan, kEvalBatch, ctx);
  eval_model.bind(weights);
  const EvalResult val = evaluate_model(eval_model, dev, "val", ctx);
  const EvalResult test = evaluate_model(eval_model, dev, "test", ctx);

  nlohmann::json metrics = {
      {"dna", cmd.dna},
      {"data", data.name},
      {"device", place.str()},
      {"steps", tr.steps_done},
      {"batch", cmd.batch},
      {"learning_rate", learning_rate},
      {"lr_schedule", cmd.lr_schedule},
      {"time_budget_seconds", topts.time_budget},
      {"dna_learning_rate", dna.learning_rate},
      {"train_loss", tr.final_loss},
      {"failed", tr.failed},
      {"failure", tr.failure},
      {"val_accuracy", val.accuracy()},
      {"val_loss", val.loss},
      {"test_accuracy", test.accuracy()},
      {"parameters", plan.param_count},
      {"train_flops", tr.flops},
      {"flops", tr.flops + val.flops},  // the paper's count: training plus validation
      {"seconds", tr.seconds},
      {"graphs", tr.graphed},
      {"graph_failure", tr.graph_failure},
      {"images_per_second", tr.seconds > 0 ? tr.steps_done * double(cmd.batch) / tr.seconds : 0}};
  if (!cmd.out.empty()) {
    std::filesystem::create_directories(cmd.out);
    save_weights(weights, cmd.out + "/weights.evow");
    write_file_atomic(cmd.out + "/metrics.json", metrics.dump(2) + "\n", "metrics");
    write_file_atomic(cmd.out + "/dna.json", to_json(dna), "DNA file");
  }
  if (json) {
    print_json(metrics);
  } else {
    if (tr.failed) std::printf("training stopped: %s\n", tr.failure.c_str());
    std::printf("trained %d steps in %s (%.0f img/s): train loss %.4f, val accuracy %.2f%%, "
                "test accuracy %.2f%%\n",
                tr.steps_done, format_duration(tr.seconds).c_str(),
                metrics["images_per_second"].get<double>(), tr.final_loss, 100 * val.accuracy(),
                100 * test.accuracy());
    if (!cmd.out.empty())
      std::printf("wrote %s/weights.evow, %s/metrics.json\n", cmd.out.c_str(), cmd.out.c_str());
  }
  return tr.failed ? 1 : 0;
}

}  // namespace

Command add_train_command(CLI::App& app, const Globals& globals) {
  const auto a = std::make_shared<TrainArgs>();
  CLI::App* train = app.add_subcommand("train", "Train one DNA and save its weights and metrics");
  train->add_option("--dna", a->dna, "DNA file (JSON), e.g. data/dna/four_conv.json")->required();
  train->add_option("--weights", a->weights, "Start from these weights instead of fresh ones");
  train->add_option("--data", a->data, std::string("Data set: ") + kDataSpecHelp)
      ->capture_default_str();
  train->add_option("--steps", a->steps, "SGD steps (the paper: 25,600)")
      ->check(CLI::Range(1, 100000000))->capture_default_str();
  train->add_option("--batch", a->batch, "Images per step, 1-100,000 (the paper: 50)")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  train->add_option("--max-train", a->max_train, "Train on a random subset of this many images")
      ->check(CLI::PositiveNumber);
  train->add_option("--val-fraction", a->val_fraction, "Share of the training files held out, 0-0.9")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  add_place_options(train, a->place);
  train->add_option("--lr-scaling", a->lr_scaling,
                    "linear: the DNA's learning rate times --batch / 50 (the paper evolved it for "
                    "batch 50); none: the DNA's rate at any batch")
      ->check(CLI::IsMember({"linear", "none"}))->capture_default_str();
  train->add_option("--lr-schedule", a->lr_schedule,
                    "constant: the DNA's rate at every step (the paper); cosine: decays from it "
                    "to ~0 over the steps (or the --time-budget)")
      ->check(CLI::IsMember({"constant", "cosine"}))->capture_default_str();
  train->add_option("--time-budget", a->time_budget,
                    "Train for this long (30s, 10m, 1h; --steps is then a maximum, by default "
                    "none); a cosine schedule then follows the clock")
      ->check(kDuration);
  train->add_option("--out", a->out, "Folder for weights.evow, metrics.json and dna.json");
  train->add_option("--augment", a->augment, "Random pad-4 crops and flips: on (the paper's, "
                                             "default) or off")
      ->check(CLI::IsMember({"on", "off"}))->capture_default_str();
  train->add_flag("--no-augment", a->no_augment, "The same as --augment off");
  add_seed_option(train, a->seed, "Random seed (weights, batches, augmentation, split)");
  return {train, [a, train, &globals] { return run_train(*a, globals.json, *train); }};
}

}  // namespace evo::cli
