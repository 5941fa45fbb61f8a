// evo best: a run's best individual, its test accuracy and the top-k ensemble's, and the model of
// its final phase when it had one (the run's answer), all measured on the run's own data set and
// split. Not the measuring (search.h's best_of_run).
#include <memory>
#include <string>

#include "cli.h"
#include "evo/device.h"
#include "evo/error.h"
#include "evo/search.h"

namespace evo::cli {

namespace {

struct BestArgs {
  std::string run_dir, data = "fashion-mnist", device = "cpu";
  int ensemble = 5;
  uint64_t seed = 0;
};

int run_best(BestArgs a, bool json, const CLI::App& best) {
  // The run's own data set, seed and split (they choose the test and validation images).
  const RunData run = run_data(a.run_dir, best, {a.data, a.seed, 0.1});
  const SearchSummary s =
      best_of_run(a.run_dir, run.data, a.ensemble, parse_device(a.device), run.seed,
                  run.val_fraction, run.max_train, /*final_phase=*/true);
  print_search_summary(s, a.run_dir, json);
  return 0;
}

}  // namespace

Command add_best_command(CLI::App& app, const Globals& globals) {
  const auto a = std::make_shared<BestArgs>();
  CLI::App* best = app.add_subcommand("best", "The best individual of a run, its test accuracy "
                                              "and the top-k ensemble's, and the model of its "
                                              "final phase (RUN_DIR/final/) when it had one");
  best->add_option("run_dir", a->run_dir, "Run folder")->required();
  best->add_option("--data", a->data, "The run's data set (default: the one in run.json)");
  best->add_option("--ensemble", a->ensemble,
                   "Ensemble size: the top K individuals of the search, their softmax averaged")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  add_device_option(best, a->device);
  add_seed_option(best, a->seed, "The run's seed (default: the one in run.json)");
  return {best, [a, best, &globals] { return run_best(*a, globals.json, *best); }};
}

}  // namespace evo::cli
