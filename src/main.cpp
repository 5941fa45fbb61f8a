// The evo command line: parses the subcommands of the spec and reports what this build can do.
// Not the work itself: each subcommand calls into the library (search, train, ...) as they land.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evo/backend.h"
#include "evo/commands.h"
#include "evo/data.h"
#include "evo/device.h"
#include "evo/error.h"
#include "evo/tensor.h"

namespace {

constexpr int kExitUsage = 2;           // bad invocation: unknown option, missing GPU, ...
constexpr int kExitNotImplemented = 3;  // a subcommand of the spec that is not built yet
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct BackendStatus {
  std::string device;
  bool ready = false;
  std::string detail;
};

// Allocates a small tensor on `device` and round-trips random-looking values through it: a
// backend counts as ready only when its memory really works.
BackendStatus probe_backend(evo::Device device, const std::string& detail) {
  BackendStatus st{device.str(), false, detail};
  try {
    std::vector<float> values(257);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = float(i * 7919 % 263) - 131.5f;
    const evo::Tensor t = evo::Tensor::from_host(values, {257}, device);
    st.ready = t.to_host() == values;
    if (!st.ready) st.detail += " (round trip returned wrong values)";
  } catch (const std::exception& e) {
    st.detail += std::string(" (") + e.what() + ")";
  }
  return st;
}

int print_status(bool json) {
  const evo::GpuInventory gpus = evo::discover_gpus();
  std::vector<BackendStatus> backends;
  backends.push_back(probe_backend(evo::Device::cpu(),
                                   evo::backend_for(evo::DeviceKind::CPU).inventory().names[0]));
  backends.push_back(probe_backend(evo::Device::emu(), "CPU emulator of the CUDA kernels"));
  for (int i = 0; i < gpus.count; ++i)
    backends.push_back(probe_backend(evo::Device::cuda(i), gpus.names[i]));

  const bool have_data = std::filesystem::exists(
      std::filesystem::path(kFashionMnistDir) / "train-images-idx3-ubyte.gz");
  const std::vector<std::pair<std::string, std::string>> pending = {
      {"search", "issue 6: evolution, population store, workers"},
      {"mutate / report", "issue 6"},
      {"layer ops on emu / cuda", "issue 4: the CUDA kernels"}};

  if (json) {
    nlohmann::json j;
    j["version"] = EVO_VERSION;
    j["gpus"] = {{"count", gpus.count}, {"names", gpus.names}, {"reason", gpus.reason}};
    for (const auto& b : backends)
      j["backends"].push_back({{"device", b.device}, {"ready", b.ready}, {"detail", b.detail}});
    j["data"] = {{"fashion-mnist", have_data}};
    for (const auto& [what, where] : pending) j["not_built_yet"].push_back(what);
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf("evo %s: Large-Scale Evolution of Image Classifiers (Real et al. 2017), from scratch\n\n",
              EVO_VERSION);
  std::printf("devices\n");
  for (const auto& b : backends)
    std::printf("  %-8s %-6s %s\n", b.device.c_str(), b.ready ? "ready" : "FAILED",
                b.detail.c_str());
  if (gpus.count == 0)
    std::printf("  %-8s %-6s no GPU: %s; evo runs on the CPU\n", "cuda", "-",
                gpus.reason.c_str());
  std::printf("\ndata\n  fashion-mnist  %s\n", have_data
                                                  ? kFashionMnistDir
                                                  : "missing (tools/setup.sh installs it)");
  std::printf("\nworks today: evo train / eval / show (DNA -> model -> SGD on the CPU backend),\n"
              "             tensors and contexts on cpu/emu/cuda, GPU discovery\n");
  std::printf("not built yet:\n");
  for (const auto& [what, where] : pending)
    std::printf("  %-34s %s\n", what.c_str(), where.c_str());
  std::printf("\nThe search itself is not built yet: `evo` will run it with these defaults once it\n"
              "lands. `evo --help` lists the subcommands.\n");
  return 0;
}

// A subcommand of the spec that is not built yet: say so and fail, never pretend.
struct NotBuilt : evo::Error {
  using evo::Error::Error;
};

[[noreturn]] void not_built(const std::string& name, const std::string& issue) {
  throw NotBuilt("`evo " + name + "` is not built yet (" + issue +
                   "); run `evo` with no arguments to see what this build can do");
}

}  // namespace

int main(int argc, char** argv) {
  evo::register_backends();

  CLI::App app{"evo: evolutionary architecture search of image classifiers (Real et al., ICML 2017),\n"
               "on GPUs or the CPU, with no deep-learning library. With no subcommand: search."};
  app.set_version_flag("--version", std::string("evo ") + EVO_VERSION);
  app.require_subcommand(0, 1);
  app.fallthrough();  // `evo show FILE --json`: subcommands pass --json up to the top level
  bool json = false;
  app.add_flag("--json", json, "Print one JSON object instead of the human summary");

  // Search options also live on the top level, so `evo --gpus 0-7` is a search.
  struct SearchOptions {
    std::string data = "fashion-mnist", gpus, run_dir = "runs/latest", time_limit = "30m";
    std::string selection = "tournament";
    int workers_per_gpu = 1, workers = 0, population = 0, steps = 0, max_children = 0;
    uint64_t seed = 0;
  };
  SearchOptions top, sub;
  auto add_search_options = [](CLI::App* a, SearchOptions& o) {
    a->add_option("--data", o.data, "Data set: fashion-mnist, mnist:DIR, cifar10:DIR, "
                                    "cifar100:DIR, folder:DIR")->capture_default_str();
    a->add_option("--gpus", o.gpus, "GPUs to use: 0-7, 0,2,5, all, or none (CPU)");
    a->add_option("--workers-per-gpu", o.workers_per_gpu, "Workers (streams) per GPU")
        ->capture_default_str();
    a->add_option("--workers", o.workers, "CPU workers when --gpus none");
    a->add_option("--population", o.population, "Population size");
    a->add_option("--steps", o.steps, "Training steps per child");
    a->add_option("--run-dir", o.run_dir, "Population folder (may be shared by many machines)")
        ->capture_default_str();
    a->add_option("--time-limit", o.time_limit, "Stop after this long (30m, 2h, ...)")
        ->capture_default_str();
    a->add_option("--max-children", o.max_children, "Stop after this many children");
    a->add_option("--selection", o.selection, "tournament (the paper's) or aging")
        ->check(CLI::IsMember({"tournament", "aging"}))->capture_default_str();
    a->add_option("--seed", o.seed, "Random seed");
  };
  add_search_options(&app, top);

  CLI::App* search = app.add_subcommand("search", "Run the evolutionary search (the default)");
  add_search_options(search, sub);

  evo::TrainCommand tc;
  CLI::App* train = app.add_subcommand("train", "Train one DNA and save its weights and metrics");
  train->add_option("--dna", tc.dna, "DNA file (JSON), e.g. data/dna/four_conv.json")->required();
  train->add_option("--weights", tc.weights, "Start from these weights instead of fresh ones");
  train->add_option("--data", tc.data, std::string("Data set: ") + evo::kDataSpecHelp)
      ->capture_default_str();
  train->add_option("--steps", tc.steps, "SGD steps (the paper: 25,600)")->capture_default_str();
  train->add_option("--batch", tc.batch, "Images per step (the paper: 50)")->capture_default_str();
  train->add_option("--max-train", tc.max_train, "Train on a random subset of this many images");
  train->add_option("--val-fraction", tc.val_fraction, "Share of the training files held out")
      ->capture_default_str();
  train->add_option("--device", tc.device, "cpu, emu or cuda:N")->capture_default_str();
  train->add_option("--out", tc.out, "Folder for weights.evow, metrics.json and dna.json");
  train->add_option("--seed", tc.seed, "Random seed (weights, batches, augmentation, split)");

  evo::EvalCommand ec;
  CLI::App* eval = app.add_subcommand("eval", "Evaluate a trained DNA on a split");
  eval->add_option("--dna", ec.dna, "DNA file (JSON)")->required();
  eval->add_option("--weights", ec.weights, "Weights file")->required();
  eval->add_option("--data", ec.data, "Data set")->capture_default_str();
  eval->add_option("--split", ec.split, "val or test")->check(CLI::IsMember({"val", "test"}))
      ->capture_default_str();
  eval->add_option("--device", ec.device, "cpu, emu or cuda:N")->capture_default_str();
  eval->add_option("--seed", ec.seed, "The seed used in training (it chose the val split)");
  eval->add_option("--val-fraction", ec.val_fraction, "As in training")->capture_default_str();

  evo::ShowCommand sc;
  CLI::App* show = app.add_subcommand("show", "Print a DNA: layers, shapes, parameters, FLOPs");
  show->add_option("file", sc.dna, "DNA file (JSON)")->required();
  show->add_flag("--dot", sc.dot, "Print Graphviz (dot) instead");
  show->add_option("--input", sc.input, "Image shape HxWxC")->capture_default_str();
  show->add_option("--classes", sc.classes, "Number of classes")->capture_default_str();

  std::string dna, mutation;
  uint64_t seed = 0;
  CLI::App* mutate = app.add_subcommand("mutate", "Apply one named mutation and print the child");
  mutate->add_option("file", dna, "DNA file (JSON)")->required();
  mutate->add_option("--mutation", mutation, "Mutation name")->required();
  mutate->add_option("--seed", seed, "Random seed");
  std::string run_dir;
  CLI::App* report = app.add_subcommand("report", "Write an HTML page with plots of a run");
  report->add_option("run_dir", run_dir, "Run folder")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version, or the parse error
    return code == 0 ? 0 : kExitUsage;
  }

  try {
    const SearchOptions& opts = search->parsed() ? sub : top;
    if (!opts.gpus.empty()) {
      // Validate before anything else: a GPU that is not there is a usage error, not a crash.
      evo::parse_gpu_list(opts.gpus, evo::discover_gpus());
    }
    if (train->parsed()) {
      tc.json = json;
      return evo::run_train(tc);
    }
    if (eval->parsed()) {
      ec.json = json;
      return evo::run_eval(ec);
    }
    if (show->parsed()) {
      sc.json = json;
      return evo::run_show(sc);
    }
    if (mutate->parsed()) not_built("mutate", "issue 6");
    if (report->parsed()) not_built("report", "issue 6");
    if (search->parsed() || argc > 1 + (json ? 1 : 0)) not_built("search", "issue 6");
    return print_status(json);
  } catch (const evo::UsageError& e) {
    std::fprintf(stderr, "evo: error: %s\n", e.what());
    return kExitUsage;
  } catch (const NotBuilt& e) {
    std::fprintf(stderr, "evo: %s\n", e.what());
    return kExitNotImplemented;
  } catch (const evo::Error& e) {
    std::fprintf(stderr, "evo: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "evo: unexpected error: %s\n", e.what());
    return 1;
  }
}
