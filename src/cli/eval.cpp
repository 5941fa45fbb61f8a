// evo eval: evaluates a trained DNA's weights on the validation or test split and prints its
// accuracy. Not training (evo train) and not a search's ensemble (evo best).
#include <cstdio>
#include <memory>
#include <string>

#include "cli.h"
#include "evo/backend.h"
#include "evo/data.h"
#include "evo/dna.h"
#include "evo/train.h"

namespace evo::cli {

namespace {

struct EvalArgs {
  std::string dna, weights, data = "fashion-mnist", split = "val", device = "cpu";
  double val_fraction = 0.1;
  int max_train = 0;
  int threads = 0;  // CPU threads of the ops; 0: every core
  uint64_t seed = 0;
};

int run_eval(const EvalArgs& cmd, bool json) {
  const Device device = parse_device(cmd.device);
  if (cmd.threads > 0) set_cpu_threads(cmd.threads);
  const Dataset data = load_data({cmd.data, cmd.seed, cmd.val_fraction, cmd.max_train});
  const CompiledDna plan =
      compile(load_dna(cmd.dna), data.train.h, data.train.w, data.train.c, data.classes);
  Weights weights = load_weights(cmd.weights, plan, device);
  Context ctx(device, cmd.seed);
  const DeviceDataset dev = DeviceDataset::upload(data, device);
  Model model(plan, kEvalBatch, ctx);
  model.bind(weights);
  const EvalResult r = evaluate_model(model, dev, cmd.split, ctx);
  if (json) {
    print_json({{"split", cmd.split},
                {"images", r.n},
                {"correct", r.correct},
                {"accuracy", r.accuracy()},
                {"loss", r.loss}});
  } else {
    std::printf("%s accuracy %.2f%% (%d of %d), loss %.4f\n", cmd.split.c_str(),
                100 * r.accuracy(), r.correct, r.n, r.loss);
  }
  return 0;
}

}  // namespace

Command add_eval_command(CLI::App& app, const Globals& globals) {
  const auto a = std::make_shared<EvalArgs>();
  CLI::App* eval = app.add_subcommand("eval", "Evaluate a trained DNA on a split");
  eval->add_option("--dna", a->dna, "DNA file (JSON)")->required();
  eval->add_option("--weights", a->weights, "Weights file")->required();
  eval->add_option("--data", a->data, "Data set")->capture_default_str();
  eval->add_option("--split", a->split, "val or test")->check(CLI::IsMember({"val", "test"}))
      ->capture_default_str();
  add_device_option(eval, a->device);
  eval->add_option("--threads", a->threads, "CPU threads of the ops, 1-256 (default: every core)")
      ->check(CLI::Range(1, 256));
  add_seed_option(eval, a->seed, "The seed used in training (it chose the val split)");
  eval->add_option("--val-fraction", a->val_fraction, "As in training")
      ->check(CLI::Range(0.0, 0.9))->capture_default_str();
  eval->add_option("--max-train", a->max_train,
                   "As in training (a capped training set chose the standardisation's mean and "
                   "std)")
      ->check(CLI::Range(1, 1 << 30));
  return {eval, [a, &globals] { return run_eval(*a, globals.json); }};
}

}  // namespace evo::cli
