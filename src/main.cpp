// The evo command line: parses the subcommands of the spec and reports what this build can do.
// Not the work itself: each subcommand calls into the library (search, train, ...) as they land.
#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <thread>
#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evo/backend.h"
#include "evo/commands.h"
#include "evo/data.h"
#include "evo/mutation.h"
#include "evo/report.h"
#include "evo/search.h"
#include "evo/device.h"
#include "evo/error.h"
#include "evo/tensor.h"

namespace {

// Training steps per child of the CPU default search (the paper: 25,600 on GPUs).
constexpr int kCpuSteps = 1000;
// Inheritance of the CPU default search (GPUs: the paper's). Measured in bench/results/cpu_search.md.
constexpr evo::Inheritance kCpuInheritance = evo::Inheritance::Keep;

constexpr int kExitUsage = 2;           // bad invocation: unknown option, missing GPU, ...

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
      std::filesystem::path(evo::kFashionMnistDefaultDir) / "train-images-idx3-ubyte.gz");

  if (json) {
    nlohmann::json j;
    j["version"] = EVO_VERSION;
    j["gpus"] = {{"count", gpus.count}, {"names", gpus.names}, {"reason", gpus.reason}};
    for (const auto& b : backends)
      j["backends"].push_back({{"device", b.device}, {"ready", b.ready}, {"detail", b.detail}});
    j["data"] = {{"fashion-mnist", have_data}};
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
                                                  ? evo::kFashionMnistDefaultDir
                                                  : "missing (tools/setup.sh installs it)");
  std::printf("\n`evo` with no arguments runs the search; `evo --help` lists the subcommands.\n");
  return 0;
}

// NaN (not measured) is JSON null.
nlohmann::json number_or_null(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }

nlohmann::json summary_json(const evo::SearchSummary& s) {
  return {{"children", s.children},
          {"failed", s.failed},
          {"seconds", s.seconds},
          {"total_flops", s.total_flops},
          {"best_id", s.best_id},
          {"best_val_accuracy", s.best_val},
          {"best_test_accuracy", number_or_null(s.best_test)},
          {"best_error", s.best_error},
          {"ensemble_size", s.ensemble_size},
          {"ensemble_test_accuracy", number_or_null(s.ensemble_test)},
          {"children_per_hour", s.children_per_hour},
          {"damaged_records", s.damaged},
          {"report", s.report_path}};
}

void print_summary(const evo::SearchSummary& s, const std::string& run_dir) {
  for (const std::string& d : s.damaged)
    std::fprintf(stderr, "evo: left out a damaged record: %s\n", d.c_str());
  if (s.best_id.empty()) {
    std::printf("no trained individual in %s yet\n", run_dir.c_str());
    return;
  }
  if (s.seconds > 0)
    std::printf("\nsearch finished after %.1f minutes: %d children trained here (%d failed)\n",
                s.seconds / 60, s.children + s.failed, s.failed);
  if (std::isfinite(s.best_test))
    std::printf("best individual   %s: validation accuracy %.2f%%, test accuracy %.2f%%\n",
                s.best_id.c_str(), 100 * s.best_val, 100 * s.best_test);
  else
    std::printf("best individual   %s: validation accuracy %.2f%%, test accuracy not measured: "
                "%s\n", s.best_id.c_str(), 100 * s.best_val, s.best_error.c_str());
  if (s.ensemble_size > 0)
    std::printf("ensemble of top %d: test accuracy %.2f%%\n", s.ensemble_size,
                100 * s.ensemble_test);
  else
    std::printf("ensemble          not measured: no individual could be evaluated\n");
  std::printf("run totals        %.3g FLOPs, %.0f children per hour\n", s.total_flops,
              s.children_per_hour);
  if (!s.report_path.empty()) std::printf("report            %s\n", s.report_path.c_str());
}

// "30m", "2h", "1h30m", "90s", or plain seconds; 0 or "none" = no limit.
// "30m", "2h", "1h30m", "90s", "45" (seconds), "1.5h", or "none"/"0" (no limit). Plain decimal
// numbers only: no sign, exponent, hex, NaN or infinity, and at most a year.
double parse_duration(const std::string& text) {
  const auto bad = [&] {
    return evo::UsageError("--time-limit '" + text.substr(0, 40) +
                           "': expected a duration like 30m, 2h, 1h30m, 90s or none");
  };
  if (text == "none" || text == "0") return 0;
  double total = 0;
  std::size_t i = 0;
  if (text.empty()) throw bad();
  while (i < text.size()) {
    const std::size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
      ++i;
    const std::string number = text.substr(start, i - start);
    if (number.empty() || number.find('.') != number.rfind('.') || number == ".") throw bad();
    double unit = 1;
    if (i < text.size()) {
      const char u = text[i++];
      if (u != 'd' && u != 'h' && u != 'm' && u != 's') throw bad();
      unit = u == 'd' ? 86400 : u == 'h' ? 3600 : u == 'm' ? 60 : 1;
    }
    total += std::stod(number) * unit;
  }
  if (!(total > 0) || total > 366 * 86400.0)
    throw evo::UsageError("--time-limit '" + text.substr(0, 40) +
                          "': must be more than 0 and at most a year (or none)");
  return total;
}

// For CLI11: an unsigned option given "-1" would wrap to 2^64-1 without a word.
const CLI::Validator kNonNegativeInteger(
    [](std::string& s) {
      const bool digits = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      });
      return digits ? std::string() : "must be a whole number >= 0, not '" + s.substr(0, 40) + "'";
    },
    "UINT");

// For CLI11: the option's value must parse (its message is the one parse_duration throws).
const CLI::Validator kDuration(
    [](std::string& s) {
      try {
        parse_duration(s);
        return std::string();
      } catch (const evo::UsageError& e) {
        return std::string(e.what());
      }
    },
    "DURATION");

std::atomic<bool> g_stop{false};

extern "C" void on_interrupt(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C: leave at once
  const char msg[] = "\nevo: stopping: finishing or abandoning the children in flight "
                     "(Ctrl-C again to quit at once)\n";
  (void)!write(2, msg, sizeof msg - 1);
}

struct SearchArgs {
  std::string data = "fashion-mnist", gpus, run_dir = "runs/latest", time_limit, selection = "tournament",
              augment, inheritance, stale_after;
  int workers_per_gpu = 1, workers = 0, population = 0, steps = 0, max_children = 0, sample = 0;
  int max_train = 0, max_val = 0, threads = 0;
  int64_t max_params = 0;
  double max_flops = 0;
  uint64_t seed = 0;
};

void add_search_options(CLI::App* a, SearchArgs& o) {
  a->add_option("--data", o.data, std::string("Data set: ") + evo::kDataSpecHelp)
      ->capture_default_str();
  a->add_option("--gpus", o.gpus, "GPUs to use: 0-7, 0,2,5, all, or none (CPU); default: all "
                                  "visible GPUs, else none");
  // Ranges: what a run can use, so a typo (--workers 100000) is an error, not an abort.
  a->add_option("--workers-per-gpu", o.workers_per_gpu, "Workers (CUDA streams) per GPU, 1-64")
      ->check(CLI::Range(1, 64))->capture_default_str();
  a->add_option("--workers", o.workers,
                "CPU workers with --gpus none, 1-256 (default: one per core)")
      ->check(CLI::Range(1, 256));
  a->add_option("--threads", o.threads,
                "CPU threads per CPU worker, 1-256 (default: cores / workers)")
      ->check(CLI::Range(1, 256));
  a->add_option("--population", o.population,
                "Population size, 2-100,000 (default: 1000 on GPUs as in the paper, 16 on the CPU)")
      ->check(CLI::Range(2, 100000));
  a->add_option("--steps", o.steps,
                "Training steps per child (default: 25,600 on GPUs as in the paper, 1,000 on the CPU)")
      ->check(CLI::Range(1, 100000000));
  a->add_option("--run-dir", o.run_dir, "Population folder (may be shared by many machines; an "
                                        "existing population is resumed)")->capture_default_str();
  a->add_option("--time-limit", o.time_limit,
                "Stop after this long: 30m, 2h, 1h30m, 90s, none (default: none on GPUs, 30m on "
                "the CPU)")
      ->check(kDuration);
  a->add_option("--max-children", o.max_children, "Stop after this process trained this many")
      ->check(CLI::NonNegativeNumber);
  a->add_option("--selection", o.selection, "tournament (the paper's) or aging (Real et al. 2019)")
      ->check(CLI::IsMember({"tournament", "aging"}))->capture_default_str();
  a->add_option("--sample-size", o.sample, "Individuals sampled per selection (tournament: 2; "
                                           "aging: default 5)")
      ->check(CLI::Range(2, 100000));
  a->add_option("--augment", o.augment, "Random pad-4 crops and flips while training: on (the "
                                        "paper's, default on GPUs) or off (default on the CPU)")
      ->check(CLI::IsMember({"on", "off"}));
  a->add_option("--inheritance", o.inheritance,
                "How a child's weights come from its parent's: paper (keep tensors of unchanged "
                "shape, draw the rest afresh; the default on GPUs) or keep (also keep the overlap "
                "of resized tensors, inserted convolutions start as the identity; beyond the "
                "paper, the default on the CPU)")
      ->check(CLI::IsMember({"paper", "keep"}));
  a->add_option("--max-params", o.max_params,
                "Size limit: no individual with more trainable parameters (mutations over it are "
                "drawn again; default none)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  a->add_option("--max-flops", o.max_flops,
                "Size limit: no individual with more forward FLOPs per image (default none)")
      ->check(CLI::Range(1.0, 1e18));
  a->add_option("--stale-after", o.stale_after,
                "A worker of another machine on the same run folder whose child has had no "
                "heartbeat this long is dead and its slot is reclaimed (default 10m)")
      ->check(kDuration);
  a->add_option("--max-train", o.max_train, "Train on a random subset of this many images")
      ->check(CLI::PositiveNumber);
  a->add_option("--max-val", o.max_val, "Validate on a random subset of this many images")
      ->check(CLI::PositiveNumber);
  a->add_option("--seed", o.seed, "Random seed (0 to 2^64-1)")->check(kNonNegativeInteger);
}

// A run folder's recorded settings fill every search option the command line did not give, so
// `evo search --run-dir RUN` resumes RUN as it was started; an option given explicitly that
// differs is refused by the store (population.h) with both values named.
void resume_settings(SearchArgs& a, const CLI::App& app) {
  const evo::RunSettings run = evo::read_run_settings(a.run_dir);
  const nlohmann::json& st = run.settings;
  const auto given = [&](const char* option) { return app.count(option) > 0; };
  const auto has = [&](const char* key, bool (nlohmann::json::*is)() const noexcept) {
    return st.contains(key) && (st[key].*is)();
  };
  if (!given("--data") && has("data", &nlohmann::json::is_string)) a.data = st["data"];
  if (!given("--steps") && has("steps", &nlohmann::json::is_number_integer)) a.steps = st["steps"];
  if (!given("--augment") && has("augment", &nlohmann::json::is_boolean))
    a.augment = st["augment"].get<bool>() ? "on" : "off";
  if (!given("--selection") && has("selection", &nlohmann::json::is_string))
    a.selection = st["selection"];
  if (!given("--sample-size") && has("sample_size", &nlohmann::json::is_number_integer))
    a.sample = st["sample_size"];
  if (!given("--inheritance") && has("inheritance", &nlohmann::json::is_string))
    a.inheritance = st["inheritance"];
  if (!given("--seed") && has("seed", &nlohmann::json::is_number_unsigned)) a.seed = st["seed"];
  if (!given("--population") && run.population > 0) a.population = run.population;
  if (!given("--max-params") && has("max_params", &nlohmann::json::is_number_integer))
    a.max_params = st["max_params"];
  if (!given("--max-flops") && has("max_flops", &nlohmann::json::is_number))
    a.max_flops = st["max_flops"];
}

int run_search_command(SearchArgs a, bool json, const CLI::App& app) {
  resume_settings(a, app);
  const evo::GpuInventory inv = evo::discover_gpus();
  std::vector<int> gpus;
  if (a.gpus.empty()) {
    for (int i = 0; i < inv.count; ++i) gpus.push_back(i);
  } else {
    gpus = evo::parse_gpu_list(a.gpus, inv);
  }
  const bool on_gpu = !gpus.empty();
  evo::SearchOptions o;
  o.data = a.data;
  o.run_dir = a.run_dir;
  if (on_gpu) {
    for (int g : gpus)
      for (int k = 0; k < std::max(1, a.workers_per_gpu); ++k) o.devices.push_back(evo::Device::cuda(g));
  } else {
    if (a.gpus.empty())
      std::fprintf(stderr, "evo: no GPU (%s): searching on the CPU\n", inv.reason.c_str());
    const int n = a.workers > 0 ? a.workers : std::max(1, int(std::thread::hardware_concurrency()));
    for (int k = 0; k < n; ++k) o.devices.push_back(evo::Device::cpu());
  }
  // The paper's settings on GPUs. On a CPU, a search that fits 30 minutes on two cores: the paper's
  // rules (mutations, selection, inheritance, the training recipe) with a smaller budget. With
  // 1,000 steps per child a freshly widened net recovers within one child, so selection can favour
  // width; 300 steps reached ~85% test where 1,000 reached ~88% in the same time (one worker each,
  // 30 minutes, bench/results/cpu_search.md). Crops and flips only slow such short training down
  // (they are for 25,600 steps), so the CPU default trains without them.
  o.population = a.population > 0 ? a.population : on_gpu ? 1000 : 16;
  o.steps = a.steps > 0 ? a.steps : on_gpu ? 25600 : kCpuSteps;
  o.time_limit = parse_duration(a.time_limit.empty() ? (on_gpu ? "none" : "30m") : a.time_limit);
  o.max_children = a.max_children;
  o.selection = a.selection == "aging" ? evo::Selection::Aging : evo::Selection::Tournament;
  o.sample_size = a.sample > 0 ? a.sample : o.selection == evo::Selection::Aging ? 5 : 2;
  o.augment = a.augment.empty() ? on_gpu : a.augment == "on";
  o.inheritance = !a.inheritance.empty() ? evo::parse_inheritance(a.inheritance)
                  : on_gpu               ? evo::Inheritance::Paper
                                         : kCpuInheritance;
  if (!a.stale_after.empty() && a.stale_after != "none" && a.stale_after != "0")
    o.stale_seconds = parse_duration(a.stale_after);
  o.max_params = a.max_params;
  o.max_flops = a.max_flops;
  o.max_train = a.max_train;
  o.max_val = a.max_val;
  o.threads_per_worker = a.threads;
  o.seed = a.seed;
  o.quiet = json;

  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  const evo::SearchSummary s = evo::run_search(o, g_stop);
  if (json) {
    std::cout << summary_json(s).dump() << "\n";
  } else {
    print_summary(s, a.run_dir);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {

  CLI::App app{"evo: evolutionary architecture search of image classifiers (Real et al., ICML 2017),\n"
               "on GPUs or the CPU, with no deep-learning library. With no subcommand: search."};
  app.set_version_flag("--version", std::string("evo ") + EVO_VERSION);
  app.require_subcommand(0, 1);
  app.fallthrough();  // `evo show FILE --json`: subcommands pass --json up to the top level
  bool json = false;
  app.add_flag("--json", json, "Print one JSON object instead of the human summary");

  // Search options also live on the top level, so `evo --gpus 0-7` is a search.
  SearchArgs top, sub;
  add_search_options(&app, top);
  CLI::App* search = app.add_subcommand("search", "Run the evolutionary search (the default)");
  add_search_options(search, sub);

  evo::TrainCommand tc;
  CLI::App* train = app.add_subcommand("train", "Train one DNA and save its weights and metrics");
  train->add_option("--dna", tc.dna, "DNA file (JSON), e.g. data/dna/four_conv.json")->required();
  train->add_option("--weights", tc.weights, "Start from these weights instead of fresh ones");
  train->add_option("--data", tc.data, std::string("Data set: ") + evo::kDataSpecHelp)
      ->capture_default_str();
  train->add_option("--steps", tc.steps, "SGD steps (the paper: 25,600)")
      ->check(CLI::Range(1, 100000000))->capture_default_str();
  train->add_option("--batch", tc.batch, "Images per step, 1-100,000 (the paper: 50)")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  train->add_option("--max-train", tc.max_train, "Train on a random subset of this many images")
      ->check(CLI::PositiveNumber);
  train->add_option("--val-fraction", tc.val_fraction, "Share of the training files held out, 0-0.9")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  train->add_option("--device", tc.device, "cpu, emu or cuda:N")->capture_default_str();
  train->add_option("--out", tc.out, "Folder for weights.evow, metrics.json and dna.json");
  // One spelling with `evo search`: --augment on|off (--no-augment stays as the short form).
  std::string train_augment = "on";
  bool no_augment = false;
  train->add_option("--augment", train_augment, "Random pad-4 crops and flips: on (the paper's, "
                                                "default) or off")
      ->check(CLI::IsMember({"on", "off"}))->capture_default_str();
  train->add_flag("--no-augment", no_augment, "The same as --augment off");
  train->add_option("--seed", tc.seed, "Random seed (weights, batches, augmentation, split)")
      ->check(kNonNegativeInteger);

  evo::EvalCommand ec;
  CLI::App* eval = app.add_subcommand("eval", "Evaluate a trained DNA on a split");
  eval->add_option("--dna", ec.dna, "DNA file (JSON)")->required();
  eval->add_option("--weights", ec.weights, "Weights file")->required();
  eval->add_option("--data", ec.data, "Data set")->capture_default_str();
  eval->add_option("--split", ec.split, "val or test")->check(CLI::IsMember({"val", "test"}))
      ->capture_default_str();
  eval->add_option("--device", ec.device, "cpu, emu or cuda:N")->capture_default_str();
  eval->add_option("--seed", ec.seed, "The seed used in training (it chose the val split)")
      ->check(kNonNegativeInteger);
  eval->add_option("--val-fraction", ec.val_fraction, "As in training")
      ->check(CLI::Range(0.0, 0.9))->capture_default_str();

  evo::ShowCommand sc;
  CLI::App* show = app.add_subcommand("show", "Print a DNA: layers, shapes, parameters, FLOPs");
  show->add_option("file", sc.dna, "DNA file (JSON)")->required();
  show->add_flag("--dot", sc.dot, "Print Graphviz (dot) instead");
  show->add_option("--input", sc.input, "Image shape HxWxC")->capture_default_str();
  show->add_option("--classes", sc.classes, "Number of classes, 1-100,000")
      ->check(CLI::Range(1, 100000))->capture_default_str();

  std::string dna, mutation;
  uint64_t seed = 0;
  CLI::App* mutate = app.add_subcommand("mutate", "Apply one named mutation and print the child");
  mutate->add_option("file", dna, "DNA file (JSON)")->required();
  std::string names = "random";
  for (evo::Mutation m : evo::all_mutations()) names += std::string(", ") + evo::to_string(m);
  mutate->add_option("--mutation", mutation, "One of: " + names)->required();
  mutate->add_option("--seed", seed, "Random seed")->check(kNonNegativeInteger);
  std::string run_dir, report_out;
  std::vector<std::string> report_dirs;
  CLI::App* report = app.add_subcommand(
      "report", "Write an HTML page with plots of a run, or one page comparing several runs");
  report
      ->add_option("run_dir", report_dirs,
                   "Run folder; with two or more, one page comparing them, grouped by the "
                   "run.json settings that differ (the seed aside)")
      ->required();
  report->add_option("--out", report_out,
                     "Output file (default RUN_DIR/report.html; with several runs, compare.html)");
  std::string best_data = "fashion-mnist", best_device = "cpu";
  int ensemble = 5;
  CLI::App* best = app.add_subcommand("best", "The best individual of a run, its test accuracy "
                                              "and the top-k ensemble's");
  best->add_option("run_dir", run_dir, "Run folder")->required();
  best->add_option("--data", best_data, "The run's data set (default: the one in run.json)");
  best->add_option("--ensemble", ensemble, "Ensemble size")->capture_default_str();
  best->add_option("--device", best_device, "cpu, emu or cuda:N")->capture_default_str();
  best->add_option("--seed", seed, "The run's seed (default: the one in run.json)")
      ->check(kNonNegativeInteger);
  CLI::App* status = app.add_subcommand("status", "What this build can do: devices, data sets");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version, or the parse error
    return code == 0 ? 0 : kExitUsage;
  }

  try {
    if (train->parsed()) {
      tc.json = json;
      tc.augment = train_augment == "on" && !no_augment;
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
    if (mutate->parsed()) return evo::run_mutate(dna, mutation, seed, json);
    if (report->parsed()) {
      std::string out = report_out;
      if (report_dirs.size() == 1) {
        if (out.empty()) out = evo::default_report_path(report_dirs[0]);
        evo::write_report(report_dirs[0], out);
      } else {
        if (out.empty()) out = "compare.html";
        evo::write_compare_report(report_dirs, out);
      }
      std::printf("%s\n", out.c_str());
      return 0;
    }
    if (best->parsed()) {
      // The run's own data set, seed and split (they choose the test and validation images);
      // an explicit value that differs is a mistake.
      const evo::RunSettings run = evo::read_run_settings(run_dir);
      double val_fraction = 0.1;
      const nlohmann::json& st = run.settings;
      if (st.contains("data") && st["data"].is_string()) {
        if (best->count("--data") && st["data"] != best_data)
          throw evo::UsageError("run " + run_dir + " was made on " + st["data"].dump() +
                                " (run.json), not " + nlohmann::json(best_data).dump() +
                                ": leave out --data");
        best_data = st["data"];
      }
      if (st.contains("seed") && st["seed"].is_number_unsigned()) {
        if (best->count("--seed") && st["seed"] != seed)
          throw evo::UsageError("run " + run_dir + " was made with seed " + st["seed"].dump() +
                                " (run.json), not " + std::to_string(seed) + ": leave out --seed");
        seed = st["seed"];
      }
      if (st.contains("val_fraction") && st["val_fraction"].is_number())
        val_fraction = st["val_fraction"];
      const evo::SearchSummary s = evo::best_of_run(run_dir, best_data, ensemble,
                                                    evo::parse_device(best_device), seed,
                                                    val_fraction);
      if (json)
        std::cout << summary_json(s).dump() << "\n";
      else
        print_summary(s, run_dir);
      return 0;
    }
    if (status->parsed()) return print_status(json);
    return search->parsed() ? run_search_command(sub, json, *search)
                            : run_search_command(top, json, app);
  } catch (const evo::UsageError& e) {
    std::fprintf(stderr, "evo: error: %s\n", e.what());
    return kExitUsage;
  } catch (const evo::Error& e) {
    std::fprintf(stderr, "evo: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "evo: unexpected error: %s\n", e.what());
    return 1;
  }
}
