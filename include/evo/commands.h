// The subcommands behind the evo command line, as functions a test can call: train, eval, show.
// Not the argument parsing (src/main.cpp) and not the search (search.h).
#pragma once

#include <cstdint>
#include <string>

namespace evo {

struct TrainCommand {
  std::string dna, weights, data = "fashion-mnist", device = "cpu", out;
  int steps = 25600;
  int batch = 50;
  int max_train = 0;         // 0 = the whole training split
  double val_fraction = 0.1;
  uint64_t seed = 0;
  bool augment = true;  // pad-4 random crops and flips (He et al. 2016), as the paper
  bool json = false;
};
// Trains, evaluates on val and test, writes OUT/weights.evow, OUT/metrics.json and OUT/dna.json.
int run_train(const TrainCommand& cmd);

struct EvalCommand {
  std::string dna, weights, data = "fashion-mnist", split = "val", device = "cpu";
  double val_fraction = 0.1;
  uint64_t seed = 0;
  bool json = false;
};
int run_eval(const EvalCommand& cmd);

struct ShowCommand {
  std::string dna;
  std::string input = "28x28x1";  // H x W x C of the images
  int classes = 10;
  bool dot = false;
  bool json = false;
};
int run_show(const ShowCommand& cmd);

}  // namespace evo
