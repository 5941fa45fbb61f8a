// evo search (and evo with no subcommand): the search's options and their defaults on GPUs and
// on the CPU, resuming a run with its recorded settings, Ctrl-C, and the lines a search prints
// as it runs (a SearchObserver). Not the search itself (src/search/search.cpp prints nothing).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include "evo/data.h"
#include "evo/device.h"
#include "evo/error.h"
#include "evo/search.h"

namespace evo::cli {

namespace {

// Training steps per child of the CPU default search (the paper: 25,600 on GPUs).
constexpr int kCpuSteps = 1000;
// Inheritance of the CPU default search (GPUs: the paper's). Measured in bench/results/cpu_search.md.
constexpr Inheritance kCpuInheritance = Inheritance::Keep;
// Share of the CPU default's time limit kept for the final phase (bench/results/cpu_search.md).
constexpr double kCpuFinalShare = 0.5;
// Width of the CPU default's final phase (the same file says why). 0 would be "auto" (chosen per
// architecture to fit kCpuFinalEpochs passes in the time): measured once over 3 seeds, it did not
// beat 2x yet, so it is an option, not the default.
constexpr double kCpuFinalWidth = 2;
constexpr double kCpuFinalEpochs = 12;

std::atomic<bool> g_stop{false};

extern "C" void on_interrupt(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C: leave at once
  const char msg[] = "\nevo: stopping: finishing or abandoning the children in flight "
                     "(Ctrl-C again to quit at once)\n";
  (void)!write(2, msg, sizeof msg - 1);
}

struct SearchArgs {
  std::string data = "fashion-mnist", gpus, run_dir = "runs/latest", time_limit,
              selection = "tournament", augment, inheritance, stale_after, lr_schedule,
              fit_filters, final_augment, final_width;  // final_width: "auto" or a number
  double cost_tie = -1, final_share = -1, final_epochs = -1;  // -1: the default (of the device kind, or the run's)
  int final_top = 0;
  int workers_per_gpu = 1, workers = 0, population = 0, steps = 0, max_children = 0, sample = 0;
  int max_train = 0, max_val = 0, threads = 0;
  int64_t max_params = 0;
  double max_flops = 0;
  uint64_t seed = 0;
};

void add_search_options(CLI::App* a, SearchArgs& o) {
  a->add_option("--data", o.data, std::string("Data set: ") + kDataSpecHelp)
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
                "Stop after this long: 30m, 2h, 1h30m, 90s, none; every number needs its unit "
                "(default: none on GPUs, 30m on the CPU)")
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
  a->add_option("--lr-schedule", o.lr_schedule,
                "Each child's learning rate over its steps: constant (the paper's, default on "
                "GPUs) or cosine (from the DNA's rate to ~0; default on the CPU)")
      ->check(CLI::IsMember({"constant", "cosine"}));
  a->add_option("--fit-filters", o.fit_filters,
                "on: a mutation that makes a filter larger than the map it reads, or strides a "
                "1x1 map, is drawn again (default on the CPU); off: the paper's (default on GPUs)")
      ->check(CLI::IsMember({"on", "off"}));
  a->add_option("--cost-tie", o.cost_tie,
                "Tournament: two individuals within this many points of validation accuracy are "
                "a tie, won by the one cheaper to train per step, 0-100 (default 0: the paper's)")
      ->check(CLI::Range(0.0, 100.0));
  a->add_option("--final-share", o.final_share,
                "Share of --time-limit kept for the final phase, 0-0.9: the best distinct "
                "architectures (one per worker) train again (see --final-width) with a cosine rate "
                "and the best by validation is the final model, RUN_DIR/final/ (default 0.5 on "
                "the CPU, 0 on GPUs)")
      ->check(CLI::Range(0.0, 0.9));
  a->add_option("--final-top", o.final_top,
                "Architectures in the final phase, at most one per worker (default: one per "
                "worker)")
      ->check(CLI::Range(1, 100000));
  a->add_option("--final-width", o.final_width,
                "Final phase: 1 trains the architectures on from their weights; K > 1 (up to 16) "
                "widens every layer about K times (the depth factor of the first convolution on the "
                "image's path) and trains from fresh weights; auto picks for each architecture the "
                "widest of 1, 1.5, 2, 3, 4, 6, 8 that still trains --final-epochs passes in the "
                "time, by timing ~1 s probes (default 2 on the CPU, 1 on GPUs)")
      ->check([](const std::string& v) -> std::string {
        if (v == "auto") return "";
        try {
          std::size_t used = 0;
          const double k = std::stod(v, &used);
          if (used == v.size() && k >= 1 && k <= 16) return "";
        } catch (const std::exception&) {
        }
        return "--final-width " + v + ": give auto or a number from 1 to 16";
      });
  a->add_option("--final-epochs", o.final_epochs,
                "Final phase with --final-width auto: the passes over the training set each "
                "model must still get at its width (default 12)")
      ->check(CLI::Range(0.1, 10000.0));
  a->add_option("--final-augment", o.final_augment,
                "Final phase augmentation: off, flips (random horizontal flips; the default on "
                "the CPU, where its nets see tens of epochs) or on (flips and the paper's pad-4 "
                "crops; on GPUs the default follows --augment)")
      ->check(CLI::IsMember({"off", "flips", "on"}));
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
  add_seed_option(a, o.seed, "Random seed (0 to 2^64-1)");
}

// A run folder's recorded settings fill every search option the command line did not give, so
// `evo search --run-dir RUN` resumes RUN as it was started; an option given explicitly that
// differs is refused by the store (population.h) with both values named.
std::string fmt_points(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void resume_settings(SearchArgs& a, const CLI::App& app) {
  const RunSettings run = read_run_settings(a.run_dir);
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
  if (!given("--seed") && has("seed", &nlohmann::json::is_number_unsigned)) a.seed = st["seed"];
  if (!given("--population") && run.population > 0) a.population = run.population;
  if (!given("--max-params") && has("max_params", &nlohmann::json::is_number_integer))
    a.max_params = st["max_params"];
  if (!given("--max-flops") && has("max_flops", &nlohmann::json::is_number))
    a.max_flops = st["max_flops"];
  if (!given("--max-train") && has("max_train", &nlohmann::json::is_number_integer))
    a.max_train = st["max_train"];
  // Runs from before these options (no key) resume with the paper's rules they were made by,
  // not today's CPU defaults: every child in them was made by those rules.
  const bool old_run = st.is_object() && !st.empty();
  // The value an old run recorded under `key`, or the paper's `paper` when it has none.
  auto recorded = [&](const char* key, bool (nlohmann::json::*is_type)() const noexcept,
                      auto paper) {
    return has(key, is_type) ? st[key].get<decltype(paper)>() : paper;
  };
  if (!given("--inheritance") && old_run)
    a.inheritance = recorded("inheritance", &nlohmann::json::is_string, std::string("paper"));
  if (!given("--lr-schedule") && old_run)
    a.lr_schedule = recorded("lr_schedule", &nlohmann::json::is_string, std::string("constant"));
  if (!given("--fit-filters") && old_run)
    a.fit_filters = recorded("fit_filters", &nlohmann::json::is_boolean, false) ? "on" : "off";
  if (!given("--cost-tie") && old_run)
    a.cost_tie = recorded("cost_tie_points", &nlohmann::json::is_number, 0.0);
  if (!given("--final-share") && old_run)
    a.final_share = recorded("final_share", &nlohmann::json::is_number, 0.0);
  if (!given("--final-width") && old_run)
    a.final_width = has("final_width", &nlohmann::json::is_string)
                        ? st["final_width"].get<std::string>()
                        : fmt_points(recorded("final_width", &nlohmann::json::is_number, 1.0));
  if (!given("--final-epochs") && has("final_epochs", &nlohmann::json::is_number))
    a.final_epochs = st["final_epochs"];
  if (!given("--final-augment") && old_run)
    a.final_augment = recorded("final_augment", &nlohmann::json::is_string, std::string("off"));
  if (!given("--final-top") && has("final_top", &nlohmann::json::is_number_integer))
    a.final_top = st["final_top"];
}

std::string clock_text(double elapsed) {
  const long s = std::lround(elapsed);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  return buf;
}

// The lines of a running search: progress on stdout (left out with --json, whose one object
// comes at the end), problems on stderr (always).
class ConsoleObserver : public SearchObserver {
 public:
  explicit ConsoleObserver(bool quiet) : quiet_(quiet) {}

  void started(const SearchStart& st) override {
    const SearchOptions& o = st.options;
    for (const std::string& d : st.quarantined)
      std::fprintf(stderr, "evo search: moved a damaged individual to %s/damaged/ (its slot is "
                   "refilled by selection): %s\n", o.run_dir.c_str(), d.c_str());
    if (quiet_) return;
    std::printf("evo search: %s (%d train / %d val images), population %d, %d steps per child "
                "(%s), %zu worker%s, %s selection, %s inheritance, run folder %s\n",
                st.data_name.c_str(), st.train_images, st.val_images, o.population, o.steps,
                o.augment ? "with crops and flips" : "no crops or flips", o.devices.size(),
                o.devices.size() == 1 ? "" : "s",
                o.selection == Selection::Tournament ? "tournament" : "aging",
                to_string(o.inheritance), o.run_dir.c_str());
    std::printf("learning rate %s over each child, filters %s, cost ties %s, final phase %s\n",
                to_string(o.lr_schedule),
                o.fit_filters ? "fit to their maps" : "of any size",
                o.cost_tie > 0 ? ("within " + fmt_points(100 * o.cost_tie) + " points").c_str()
                               : "none",
                o.final_share > 0 && o.time_limit > 0
                    ? (fmt_points(100 * o.final_share) + "% of the time limit (" +
                       clock_text(o.final_share * o.time_limit) + "): the best " +
                       (o.final_top > 0 ? std::to_string(o.final_top) + " architectures"
                                        : std::string("architecture per worker")) +
                       (o.final_width <= 0
                            ? ", as wide as " + fmt_points(o.final_epochs) +
                                  " epochs fit, from scratch"
                        : o.final_width != 1 ? ", " + fmt_points(o.final_width) +
                                                   "x wider, from scratch"
                                             : std::string(", from their weights")) +
                       (o.final_augment == 2   ? ", crops and flips"
                        : o.final_augment == 1 ? ", flips"
                                               : "")).c_str()
                    : "none");
    if (o.max_params > 0 || o.max_flops > 0)
      std::printf("size limits: %s%s%s (mutations over them are drawn again)\n",
                  o.max_params > 0 ? ("at most " + std::to_string(o.max_params) +
                                      " parameters").c_str() : "",
                  o.max_params > 0 && o.max_flops > 0 ? ", " : "",
                  o.max_flops > 0 ? ("at most " + std::to_string(int64_t(o.max_flops)) +
                                     " forward FLOPs per image").c_str() : "");
    if (st.resumed)
      std::printf("resuming a population of %zu individuals (best so far %.2f%%)\n", st.resumed,
                  100 * st.resumed_best);
    if (st.recovered)
      std::printf("discarded %zu unfinished children of dead workers\n", st.recovered);
    std::fflush(stdout);
  }

  void child_done(const ChildDone& c) override {
    if (quiet_) return;
    const IndividualRecord& r = c.record;
    // Ids in full (RUN/alive/<id>, RUN/dead/<id>): a parent must be findable from its line.
    if (!header_done_)
      std::printf("%-8s %-9s %-*s    %-*s %-26s %16s  %-11s  %s\n", "time", "worker",
                  int(r.id.size()), "child", int(r.id.size()), "parent", "mutation", "params",
                  "validation", "best so far");
    header_done_ = true;
    std::printf("%s %-9s %s <- %-*s %-26s %9lld params  val %6.2f%%  best %6.2f%%%s%s\n",
                clock_text(c.elapsed).c_str(), c.worker.c_str(), r.id.c_str(), int(r.id.size()),
                r.parent.empty() ? "(initial)" : r.parent.c_str(),
                r.mutation.c_str(), static_cast<long long>(r.params), 100 * r.fitness,
                100 * c.best_val, r.failed ? "  FAILED: " : "", r.failed ? r.failure.c_str() : "");
    std::fflush(stdout);
  }

  void progress(const SearchProgress& p) override {
    if (quiet_) return;
    const double hours = p.elapsed / 3600;
    const int total = p.children + p.failed;
    // How long the best has not improved: a search stuck on a local optimum shows it here.
    std::printf("-- %s: %d children (%d failed) by this process, %.0f per hour, population %zu, "
                "best validation accuracy %.2f%% (not improved for %s)\n",
                clock_text(p.elapsed).c_str(), total, p.failed, hours > 0 ? total / hours : 0,
                p.population, 100 * p.best_val, clock_text(p.since_best).c_str());
    std::fflush(stdout);
  }

  void reclaimed(std::size_t children) override {
    if (quiet_) return;
    std::printf("-- reclaimed the slots of %zu children of workers that died\n", children);
    std::fflush(stdout);
  }

  void final_started(int models, double seconds) override {
    if (quiet_) return;
    std::printf("-- final phase: the best %d distinct architecture%s train for %s each, cosine "
                "rate, in parallel\n",
                models, models == 1 ? "" : "s", clock_text(seconds).c_str());
    std::fflush(stdout);
  }

  void final_done(const FinalModel& m) override {
    if (quiet_) return;
    if (m.failed)
      std::printf("-- final %s: FAILED: %s\n", m.id.c_str(), m.failure.c_str());
    else
      std::printf("-- final %s (%lld params, width %s): validation %.2f%% in the search, %.2f%% "
                  "now, test %.2f%% after %d steps (%.1f epochs)\n",
                  m.id.c_str(), static_cast<long long>(m.params), fmt_points(m.width).c_str(),
                  100 * m.search_val, 100 * m.val, 100 * m.test, m.steps, m.epochs);
    std::fflush(stdout);
  }

  void warning(const std::string& line) override {
    std::fprintf(stderr, "%s\n", line.c_str());
  }

 private:
  bool quiet_;
  bool header_done_ = false;
};

int run_search_command(SearchArgs a, bool json, const CLI::App& app) {
  resume_settings(a, app);
  const GpuInventory inv = discover_gpus();
  std::vector<int> gpus;
  if (a.gpus.empty()) {
    for (int i = 0; i < inv.count; ++i) gpus.push_back(i);
  } else {
    gpus = parse_gpu_list(a.gpus, inv);
  }
  const bool on_gpu = !gpus.empty();
  SearchOptions o;
  o.data = a.data;
  o.run_dir = a.run_dir;
  if (on_gpu) {
    for (int g : gpus)
      for (int k = 0; k < std::max(1, a.workers_per_gpu); ++k) o.devices.push_back(Device::cuda(g));
  } else {
    if (a.gpus.empty())
      std::fprintf(stderr, "evo: no GPU (%s): searching on the CPU\n", inv.reason.c_str());
    const int n = a.workers > 0 ? a.workers : std::max(1, int(std::thread::hardware_concurrency()));
    for (int k = 0; k < n; ++k) o.devices.push_back(Device::cpu());
  }
  // The paper's settings on GPUs. On a CPU, a search that fits 30 minutes on two cores: the paper's
  // rules (mutations, selection, inheritance, the training recipe) with a smaller budget. With
  // 1,000 steps per child a freshly widened net recovers within one child, so selection can favour
  // width; 300 steps reached ~85% test where 1,000 reached ~88% in the same time (one worker each,
  // 30 minutes, bench/results/cpu_search.md). Crops and flips only slow such short training down
  // (they are for 25,600 steps), so the CPU default trains without them.
  o.population = a.population > 0 ? a.population : on_gpu ? 1000 : 16;
  o.steps = a.steps > 0 ? a.steps : on_gpu ? 25600 : kCpuSteps;
  o.time_limit = parse_duration(a.time_limit.empty() ? (on_gpu ? "none" : "30m") : a.time_limit,
                                "--time-limit");
  o.max_children = a.max_children;
  o.selection = a.selection == "aging" ? Selection::Aging : Selection::Tournament;
  o.sample_size = a.sample > 0 ? a.sample : o.selection == Selection::Aging ? 5 : 2;
  o.augment = a.augment.empty() ? on_gpu : a.augment == "on";
  o.inheritance = !a.inheritance.empty() ? parse_inheritance(a.inheritance)
                  : on_gpu               ? Inheritance::Paper
                                         : kCpuInheritance;
  if (!a.stale_after.empty() && a.stale_after != "none" && a.stale_after != "0")
    o.stale_seconds = parse_duration(a.stale_after, "--stale-after");
  // Beyond the paper, on the CPU by default (bench/results/cpu_search.md measures each): a cosine
  // rate within each child (its 1,000 steps end annealed, so validation measures a minimum, not
  // a point bouncing around one), no filter larger than its map (taps that read only padding),
  // and the second half of the time limit spent training the best two architectures, twice as
  // wide, from scratch: the search's 1,000-step children favour nets that learn fast (its best
  // are 4-19 channels wide, 25-50k parameters, and plateau near 91% validation by minute ~15),
  // and trained on for 8 minutes such a net gained nothing (89.99% test, from 90.11%), while the
  // same net twice as wide, from scratch, reached 90.62% in 4 minutes on one thread
  // (bench/results/cpu_search.md).
  o.lr_schedule = parse_lr_schedule(!a.lr_schedule.empty() ? a.lr_schedule
                                    : on_gpu               ? "constant"
                                                           : "cosine");
  o.fit_filters = !a.fit_filters.empty() ? a.fit_filters == "on" : !on_gpu;
  o.cost_tie = a.cost_tie >= 0 ? a.cost_tie / 100 : 0;
  o.final_share = a.final_share >= 0 ? a.final_share : on_gpu ? 0 : kCpuFinalShare;
  o.final_top = a.final_top;
  o.final_width = a.final_width == "auto" ? 0
                  : !a.final_width.empty()  ? std::stod(a.final_width)
                  : on_gpu                  ? 1
                                            : kCpuFinalWidth;
  o.final_epochs = a.final_epochs > 0 ? a.final_epochs : kCpuFinalEpochs;
  const std::string final_augment = !a.final_augment.empty() ? a.final_augment
                                    : on_gpu ? (o.augment ? "on" : "off")
                                             : "flips";
  o.final_augment = final_augment == "on" ? 2 : final_augment == "flips" ? 1 : 0;
  if (o.final_share > 0 && o.time_limit <= 0) {
    if (a.final_share > 0)
      throw UsageError("--final-share " + fmt_points(a.final_share) +
                       " needs a --time-limit to take its share of: give one, or --final-share 0");
    o.final_share = 0;  // the CPU default without a time limit: no final phase
  }
  o.max_params = a.max_params;
  o.max_flops = a.max_flops;
  o.max_train = a.max_train;
  o.max_val = a.max_val;
  o.threads_per_worker = a.threads;
  o.seed = a.seed;

  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  ConsoleObserver console(json);
  const SearchSummary s = run_search(o, g_stop, &console);
  print_damaged("evo report", s.report_damaged);
  print_search_summary(s, a.run_dir, json);
  return 0;
}

}  // namespace

Command add_search_command(CLI::App& app, const Globals& globals) {
  // Search options also live on the top level, so `evo --gpus 0-7` is a search.
  const auto top = std::make_shared<SearchArgs>(), sub = std::make_shared<SearchArgs>();
  add_search_options(&app, *top);
  CLI::App* search = app.add_subcommand("search", "Run the evolutionary search (the default)");
  add_search_options(search, *sub);
  return {search, [&app, &globals, search, top, sub] {
            return search->parsed() ? run_search_command(*sub, globals.json, *search)
                                    : run_search_command(*top, globals.json, app);
          }};
}

}  // namespace evo::cli
