// The evo command line: what every subcommand file shares (the registration pattern, the --json
// flag, option helpers and validators, the search summary). Not the work: each subcommand calls
// into a library that prints nothing and returns data; printing is done here, in src/cli/.
//
// Adding a subcommand is one new file and one line:
//   1. src/cli/NAME.cpp defines, in namespace evo::cli,
//        Command add_NAME_command(CLI::App& app, const Globals& globals);
//      which adds the subcommand and its options to `app` (CLI11 binds options to variables, so
//      keep them in a std::make_shared state that the run closure captures) and returns it with
//      the function that runs it. The run function reads globals.json when it runs (it is parsed
//      by then), prints a human summary or one JSON object, and returns the exit code; it throws
//      evo::UsageError for a mistake in the invocation (exit 2), evo::Error for anything else
//      (exit 1): main() prints the message. CMake compiles every src/cli/*.cpp into evo.
//   2. X(NAME) in EVO_CLI_COMMANDS below (its place there is its place in `evo --help`).
// A subcommand backed by a library of its own also links that library into the evo target
// (top-level CMakeLists.txt, `target_link_libraries(evo ...)`).
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "evo/data.h"
#include "evo/search.h"
#include "evo/train.h"

namespace evo::cli {

// A mistake in the invocation: an unknown option, a value out of range, a GPU that is not there.
inline constexpr int kExitUsage = 2;

// Options of the top level that every subcommand sees (`evo show FILE --json` passes --json up).
struct Globals {
  bool json = false;  // one JSON object on stdout instead of the human summary
};

struct Command {
  CLI::App* app = nullptr;   // the subcommand, added to the top-level app
  std::function<int()> run;  // called once the command line is parsed when `app` was given
};

// Every subcommand, in `evo --help` order. `search` is also what runs with no subcommand.
#define EVO_CLI_COMMANDS(X) \
  X(search)                 \
  X(train)                  \
  X(retrain)                \
  X(eval)                   \
  X(show)                   \
  X(mutate)                 \
  X(report)                 \
  X(best)                   \
  X(export)                 \
  X(status)                 \
  X(doctor)

#define EVO_CLI_DECLARE(name) Command add_##name##_command(CLI::App& app, const Globals& globals);
EVO_CLI_COMMANDS(EVO_CLI_DECLARE)
#undef EVO_CLI_DECLARE

// ---- option helpers ----------------------------------------------------------------------------

// For CLI11: an unsigned option given "-1" would wrap to 2^64-1 without a word.
extern const CLI::Validator kNonNegativeInteger;

// --seed N (0 to 2^64-1; "-1" is refused rather than wrapped).
CLI::Option* add_seed_option(CLI::App* app, uint64_t& seed, const std::string& help);

// --device cpu|emu|cuda:N, checked when the command runs (parse_device names the choices).
CLI::Option* add_device_option(CLI::App* app, std::string& device);

// The data set, seed and validation share a run was made with (run.json; a run made before a key
// existed keeps the value passed in). They choose the standardisation and the validation and test
// images, so a command that evaluates or exports a run's individuals must use them: an option
// given explicitly (`cmd.count(option)`) with another value is a UsageError naming both.
struct RunData {
  std::string data;
  uint64_t seed = 0;
  double val_fraction = 0.1;
  int max_train = 0;  // the training cap (it chose the images the mean and std come from)
};
RunData run_data(const std::string& run_dir, const CLI::App& cmd, RunData given);

// The data set as a command that trains, evaluates or exports one net loads it: the split and
// the training cap, which also choose the standardisation's mean and std.
Dataset load_data(const RunData& d);

// ---- training (evo train, evo retrain) ------------------------------------------------------------

// --device, --gpus and --threads of a command that trains.
struct PlaceArgs {
  std::string device = "cpu";
  std::string gpus;  // "": one device (--device); else data-parallel over these GPUs
  int threads = 0;   // CPU threads of the ops; 0: every core
};
void add_place_options(CLI::App* app, PlaceArgs& a);

// Where a command trains: one device (train_model), or several GPUs of one kind, data-parallel
// (train_data_parallel; `--gpus 0-7` on CUDA, `--device emu --gpus 0-3` on emulated GPUs, which
// the emulator then provides however many EVO_EMU_DEVICES says).
struct TrainPlace {
  std::vector<Device> devices;
  bool data_parallel = false;
  Device first() const { return devices.front(); }
  std::string str() const;  // "cpu", "cuda:3", "cuda:0-7 (data-parallel)", ...
};
// Checks the combination (UsageError: --gpus with --device cpu or cuda:N, a GPU that is not
// there) and sets the CPU threads of this thread.
TrainPlace resolve_place(const PlaceArgs& a, const CLI::App& cmd);

// The learning rate for a global batch. "linear" (the default): the DNA's rate, which the paper
// evolved for batch 50, times batch / 50 (the linear scaling rule of Goyal et al. 2017: k times
// the images per step, k times the step), so `--gpus 0-7 --batch 400` trains as eight GPUs of 50
// images each; at batch 50 it is the DNA's rate. "none": the DNA's rate at any batch.
inline constexpr int kPaperBatch = 50;
double scaled_learning_rate(double dna_rate, int batch, const std::string& rule);

// Trains `weights` (on place.first()) in place: train_model on one device with `ctx` and `dev`
// (that device's context and data), train_data_parallel (which makes its own) on several.
TrainResult train_at(const TrainPlace& place, const CompiledDna& plan, Weights& weights,
                     const Dataset& data, const DeviceDataset& dev, Context& ctx, uint64_t seed,
                     const TrainOptions& opts, float learning_rate);

// "12m05s", "1h02m".
std::string format_duration(double seconds);

// "30m", "2h", "1h30m", "90s", "45" (seconds), "1.5h", or "none"/"0" (0: no limit); `what` names
// the option in the error ("--time-limit"). kDuration: the CLI11 check of such an option.
double parse_duration(const std::string& text, const std::string& what);
extern const CLI::Validator kDuration;

// Training progress on stderr: a redrawn bar on a terminal, plain lines otherwise (logs, CI).
class Progress {
 public:
  Progress(int total, std::string label = "");
  // A training that ends on the clock: the bar follows the time, the ETA is the time left.
  void set_time_budget(double seconds);
  void update(int step, double loss, double img_s, int batch);
  void finish_line();

 private:
  int total_;
  double budget_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::string label_;
  bool tty_;
};

// ---- printing ----------------------------------------------------------------------------------

// One JSON object on one line of stdout: what every --json prints.
void print_json(const nlohmann::json& j);

// The records a command left out because they could not be read, one stderr line each:
// "<who>: left out a damaged record: <path>: <reason>".
void print_damaged(const std::string& who, const std::vector<std::string>& damaged);

// evo doctor's page (doctor.cpp): `evo status` without a run folder prints it too.
int run_doctor(bool json);

// The end of `evo search` and `evo best`: the best individual, the ensemble, the run's totals
// (human lines on stdout, the damaged records on stderr), or with json the same as one object.
void print_search_summary(const SearchSummary& s, const std::string& run_dir, bool json);

}  // namespace evo::cli
