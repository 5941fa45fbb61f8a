// What the subcommands of src/cli/ share: option helpers, JSON output, the search summary that
// `evo search` and `evo best` both end with. Not a subcommand, and no parsing of its own.
#include "cli.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "cuda/emu/runtime.h"  // set_device_count: `--device emu --gpus 0-3` asks for four
#include "evo/backend.h"

namespace evo::cli {

const CLI::Validator kNonNegativeInteger(
    [](std::string& s) {
      const bool digits = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      });
      return digits ? std::string() : "must be a whole number >= 0, not '" + s.substr(0, 40) + "'";
    },
    "UINT");

CLI::Option* add_seed_option(CLI::App* app, uint64_t& seed, const std::string& help) {
  return app->add_option("--seed", seed, help)->check(kNonNegativeInteger);
}

CLI::Option* add_device_option(CLI::App* app, std::string& device) {
  return app->add_option("--device", device, "cpu, emu or cuda:N")->capture_default_str();
}

void add_place_options(CLI::App* app, PlaceArgs& a) {
  add_device_option(app, a.device);
  app->add_option("--gpus", a.gpus,
                  "Data-parallel training on these GPUs: 0-7, 0,2,5 or all (with --device emu: "
                  "emulated GPUs); the global --batch is split over them");
  app->add_option("--threads", a.threads, "CPU threads of the ops, 1-256 (default: every core)")
      ->check(CLI::Range(1, 256));
}

std::string TrainPlace::str() const {
  if (!data_parallel) return devices.front().str();
  std::string s;
  for (const Device& d : devices) s += (s.empty() ? "" : ",") + d.str();
  return s + " (data-parallel)";
}

TrainPlace resolve_place(const PlaceArgs& a, const CLI::App& cmd) {
  if (a.threads > 0) set_cpu_threads(a.threads);
  TrainPlace place;
  if (a.gpus.empty() || a.gpus == "none") {
    place.devices.push_back(parse_device(a.device));
    return place;
  }
  const bool emulated = a.device == "emu";
  if (cmd.count("--device") && !emulated)
    throw UsageError("--gpus " + a.gpus + " with --device " + a.device +
                     ": --gpus picks the GPUs (add --device emu for emulated ones); leave out "
                     "--device, or --gpus for one device");
  GpuInventory inv;
  if (emulated) {
    // The emulator provides as many devices as asked for; `all` means what it has now.
    inv = backend_for(DeviceKind::EMU).inventory();
    if (a.gpus != "all") {
      inv.count = 64;
      inv.reason.clear();
    }
  } else {
    inv = discover_gpus();
  }
  const std::vector<int> gpus = parse_gpu_list(a.gpus, inv);
  if (gpus.empty()) {
    place.devices.push_back(Device::cpu());
    return place;
  }
  if (emulated) {
    int count = 0;
    (void)emu::cudaGetDeviceCount(&count);
    const int needed = *std::max_element(gpus.begin(), gpus.end()) + 1;
    if (needed > count) emu::set_device_count(needed);
  }
  for (int g : gpus) place.devices.push_back(emulated ? Device{DeviceKind::EMU, g} : Device::cuda(g));
  place.data_parallel = true;
  return place;
}

double scaled_learning_rate(double dna_rate, int batch, const std::string& rule) {
  if (rule == "none") return dna_rate;
  if (rule != "linear")
    throw UsageError("--lr-scaling " + rule + ": expected linear (the default) or none");
  return dna_rate * double(batch) / kPaperBatch;
}

TrainResult train_at(const TrainPlace& place, const CompiledDna& plan, Weights& weights,
                     const Dataset& data, const DeviceDataset& dev, Context& ctx, uint64_t seed,
                     const TrainOptions& opts, float learning_rate) {
  if (place.data_parallel)
    return train_data_parallel(plan, weights, data, place.devices, seed, opts, learning_rate);
  Model model(plan, opts.batch, ctx);
  model.bind(weights);
  return train_model(model, dev, ctx, opts, learning_rate);
}

// "30m", "2h", "1h30m", "90s", "1.5h", "2d", or "none"/"0" (no limit). Every number carries its
// unit: a bare "45" is refused (tools disagree on whether it means seconds or minutes, and a run
// that stops after 45 s instead of 45 minutes loses an hour). Plain decimal numbers only: no
// sign, exponent, hex, NaN or infinity, and at most a year.
double parse_duration(const std::string& text, const std::string& what) {
  const auto bad = [&] {
    return UsageError(what + " '" + text.substr(0, 40) +
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
    if (i >= text.size()) {
      // A number without its unit: say what each would mean.
      const std::string head = text.substr(0, std::min<std::size_t>(text.size(), 40));
      throw UsageError(what + " '" + head + "': give the unit: " + head + "s, " + head + "m or " +
                       head + "h (seconds, minutes or hours)");
    }
    const char u = text[i++];
    if (u != 'd' && u != 'h' && u != 'm' && u != 's') throw bad();
    const double unit = u == 'd' ? 86400 : u == 'h' ? 3600 : u == 'm' ? 60 : 1;
    total += std::stod(number) * unit;
  }
  if (!(total > 0) || total > 366 * 86400.0)
    throw UsageError(what + " '" + text.substr(0, 40) +
                     "': must be more than 0 and at most a year (or none)");
  return total;
}

// For CLI11: the option's value must parse (its message is the one parse_duration throws).
const CLI::Validator kDuration(
    [](std::string& s) {
      try {
        parse_duration(s, "duration");
        return std::string();
      } catch (const UsageError& e) {
        return std::string(e.what());
      }
    },
    "DURATION");

std::string format_duration(double seconds) {
  const long s = std::lround(std::max(seconds, 0.0));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

Progress::Progress(int total, std::string label)
    : total_(total), label_(label.empty() ? label : label + " "), tty_(::isatty(2)) {}

void Progress::set_time_budget(double seconds) {
  budget_ = seconds;
  start_ = std::chrono::steady_clock::now();
}

void Progress::update(int step, double loss, double img_s, int batch) {
  if (budget_ > 0) {
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double left = std::max(0.0, budget_ - t);
    if (tty_) {
      const int width = 30, done = std::min(width, int(width * t / budget_));
      std::string bar(std::size_t(done), '=');
      if (done < width) bar += '>' + std::string(std::size_t(width - done - 1), ' ');
      std::fprintf(stderr, "\r%s[%s] step %d  loss %.4f  %.0f img/s  left %s   ", label_.c_str(),
                   bar.c_str(), step, loss, img_s, format_duration(left).c_str());
    } else {
      std::fprintf(stderr, "%sstep %d loss %.4f %.0f img/s left %s\n", label_.c_str(), step, loss,
                   img_s, format_duration(left).c_str());
    }
    return;
  }
  const double eta = img_s > 0 ? double(total_ - step) * batch / img_s : 0;
  if (tty_) {
    const int width = 30, done = int(double(width) * step / total_);
    std::string bar(std::size_t(done), '=');
    if (done < width) bar += '>' + std::string(std::size_t(width - done - 1), ' ');
    std::fprintf(stderr, "\r%s[%s] step %d/%d  loss %.4f  %.0f img/s  ETA %s   ", label_.c_str(),
                 bar.c_str(), step, total_, loss, img_s, format_duration(eta).c_str());
    if (step == total_) std::fprintf(stderr, "\n");
  } else {
    std::fprintf(stderr, "%sstep %d/%d loss %.4f %.0f img/s ETA %s\n", label_.c_str(), step,
                 total_, loss, img_s, format_duration(eta).c_str());
  }
}

void Progress::finish_line() {
  if (tty_) std::fprintf(stderr, "\n");
}

void print_json(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
}

RunData run_data(const std::string& run_dir, const CLI::App& cmd, RunData given) {
  const nlohmann::json st = read_run_settings(run_dir).settings;
  if (st.contains("data") && st["data"].is_string()) {
    if (cmd.count("--data") && st["data"] != given.data)
      throw UsageError("run " + run_dir + " was made on " + st["data"].dump() +
                       " (run.json), not " + nlohmann::json(given.data).dump() +
                       ": leave out --data");
    given.data = st["data"];
  }
  if (st.contains("seed") && st["seed"].is_number_unsigned()) {
    if (cmd.count("--seed") && st["seed"] != given.seed)
      throw UsageError("run " + run_dir + " was made with seed " + st["seed"].dump() +
                       " (run.json), not " + std::to_string(given.seed) + ": leave out --seed");
    given.seed = st["seed"];
  }
  if (st.contains("val_fraction") && st["val_fraction"].is_number())
    given.val_fraction = st["val_fraction"];
  if (st.contains("max_train") && st["max_train"].is_number_integer())
    given.max_train = st["max_train"];
  return given;
}

Dataset load_data(const RunData& d) {
  DataOptions opts;
  opts.val_fraction = d.val_fraction;
  opts.seed = d.seed;
  opts.max_train = d.max_train;
  return load_dataset(d.data, opts);
}

void print_damaged(const std::string& who, const std::vector<std::string>& damaged) {
  for (const std::string& d : damaged)
    std::fprintf(stderr, "%s: left out a damaged record: %s\n", who.c_str(), d.c_str());
}

namespace {

// NaN (not measured) is JSON null.
nlohmann::json number_or_null(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json();
}

// "91.23%".
std::string fmt_percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * x);
  return buf;
}

nlohmann::json search_summary_json(const SearchSummary& s) {
  return {{"children", s.children},
          {"failed", s.failed},
          {"seconds", s.seconds},
          {"stopped", s.stopped},
          {"individuals", s.individuals},
          {"individuals_failed", s.individuals_failed},
          {"total_flops", s.total_flops},
          {"best_id", s.best_id},
          {"best_val_accuracy", s.best_val},
          {"best_test_accuracy", number_or_null(s.best_test)},
          {"best_error", s.best_error},
          {"ensemble_size", s.ensemble_size},
          {"ensemble_test_accuracy", number_or_null(s.ensemble_test)},
          {"children_per_hour", s.children_per_hour},
          {"final_id", s.final_id},
          {"final_folder", s.final_folder},
          {"final_val_accuracy", number_or_null(s.final_val)},
          {"final_test_accuracy", number_or_null(s.final_test)},
          {"final_ensemble_test_accuracy", number_or_null(s.final_ensemble_test)},
          {"final_ensemble_val_accuracy", number_or_null(s.final_ensemble_val)},
          // The run's answer (ensemble_is_answer) and its test accuracy: what evo export writes.
          {"answer", s.answer},
          {"answer_test_accuracy", number_or_null(s.answer_test)},
          {"final_models", s.final_models},
          {"final_seconds", s.final_seconds},
          {"damaged_records", s.damaged},
          {"report", s.report_path},
          {"trials", s.trials_path}};
}

}  // namespace

void print_search_summary(const SearchSummary& s, const std::string& run_dir, bool json) {
  if (json) {
    print_json(search_summary_json(s));  // damaged records included, as "damaged_records"
    return;
  }
  print_damaged("evo", s.damaged);
  if (s.best_id.empty()) {
    std::printf("no trained individual in %s yet\n", run_dir.c_str());
    return;
  }
  if (s.seconds > 0 && s.stopped)
    std::printf("\nsearch stopped after %.1f minutes: %d children trained here (%d failed); the "
                "run is kept: run the same command again to resume it\n",
                s.seconds / 60, s.children + s.failed, s.failed);
  else if (s.seconds > 0)
    std::printf("\nsearch finished after %.1f minutes: %d children trained here (%d failed)\n",
                s.seconds / 60, s.children + s.failed, s.failed);
  std::printf("run               %d individuals (%d failed), %.0f children per hour\n",
              s.individuals, s.individuals_failed, s.children_per_hour);
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
  if (std::isfinite(s.final_test)) {
    std::printf("final model       %s: validation accuracy %.2f%%, test accuracy %.2f%% (the "
                "final phase: %d model%s trained for %s)\n",
                s.final_id.c_str(), 100 * s.final_val, 100 * s.final_test, s.final_models,
                s.final_models == 1 ? "" : "s", format_duration(s.final_seconds).c_str());
    if (!s.final_folder.empty())
      std::printf("final model files %s/%s/ (evo export %s writes it as ONNX or PyTorch)\n",
                  run_dir.c_str(), s.final_folder.c_str(), run_dir.c_str());
    if (s.final_models > 1 && std::isfinite(s.final_ensemble_test))
      std::printf("final ensemble    of %d: validation accuracy %s, test accuracy %.2f%%\n",
                  s.final_models,
                  std::isfinite(s.final_ensemble_val)
                      ? (fmt_percent(s.final_ensemble_val)).c_str()
                      : "not measured",
                  100 * s.final_ensemble_test);
    if (s.answer == "ensemble")
      std::printf("answer            the final ensemble (its validation accuracy beats the final "
                  "model's): test accuracy %.2f%%; evo export %s writes all %d as one model\n",
                  100 * s.answer_test, run_dir.c_str(), s.final_models);
    else if (s.answer == "final model")
      std::printf("answer            the final model: test accuracy %.2f%%\n",
                  100 * s.answer_test);
  }
  std::printf("run totals        %.3g FLOPs, %.0f children per hour\n", s.total_flops,
              s.children_per_hour);
  if (!s.report_path.empty()) std::printf("report            %s\n", s.report_path.c_str());
  if (!s.trials_path.empty())
    std::printf("trial log         %s (one row per individual, for pandas or a spreadsheet)\n",
                s.trials_path.c_str());
}

}  // namespace evo::cli
