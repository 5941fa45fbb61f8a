// evo train / eval / show: load what the options name, run it, print a summary (or one JSON
// object). Not the parsing of options (src/main.cpp).
#include "evo/commands.h"
#include "evo/io.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "evo/data.h"
#include "evo/dna.h"
#include "evo/train.h"

namespace evo {

namespace {

std::string format_duration(double seconds) {
  const long s = std::lround(std::max(seconds, 0.0));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

// Progress on stderr: a redrawn bar on a terminal, plain lines otherwise (logs, CI).
class Progress {
 public:
  explicit Progress(int total) : total_(total), tty_(::isatty(2)) {}
  void update(int step, double loss, double img_s, int batch) {
    const double eta = img_s > 0 ? double(total_ - step) * batch / img_s : 0;
    if (tty_) {
      const int width = 30, done = int(double(width) * step / total_);
      std::string bar(std::size_t(done), '=');
      if (done < width) bar += '>' + std::string(std::size_t(width - done - 1), ' ');
      std::fprintf(stderr, "\r[%s] step %d/%d  loss %.4f  %.0f img/s  ETA %s   ", bar.c_str(),
                   step, total_, loss, img_s, format_duration(eta).c_str());
      if (step == total_) std::fprintf(stderr, "\n");
    } else {
      std::fprintf(stderr, "step %d/%d loss %.4f %.0f img/s ETA %s\n", step, total_, loss, img_s,
                   format_duration(eta).c_str());
    }
  }
  void finish_line() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  int total_;
  bool tty_;
};

ActShape parse_hwc(const std::string& text) {
  ActShape s;
  char x1 = 0, x2 = 0;
  if (std::sscanf(text.c_str(), "%d%c%d%c%d", &s.h, &x1, &s.w, &x2, &s.c) != 5 || x1 != 'x' ||
      x2 != 'x' || s.h < 1 || s.w < 1 || s.c < 1)
    throw UsageError("--input '" + text + "': expected HxWxC, e.g. 28x28x1 or 32x32x3");
  return s;
}

}  // namespace

int run_show(const ShowCommand& cmd) {
  const ActShape in = parse_hwc(cmd.input);
  const CompiledDna plan = compile(load_dna(cmd.dna), in.h, in.w, in.c, cmd.classes);
  if (cmd.dot) {
    std::printf("%s", to_dot(plan).c_str());
  } else if (cmd.json) {
    nlohmann::json j = {{"dna", cmd.dna},
                        {"input", cmd.input},
                        {"vertices", plan.vertices.size()},
                        {"edges", plan.edges.size()},
                        {"parameters", plan.param_count},
                        {"forward_flops_per_image", plan.forward_flops},
                        {"train_flops_per_image", plan.train_flops}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s", describe(plan).c_str());
  }
  return 0;
}

int run_train(const TrainCommand& cmd) {
  const Device device = parse_device(cmd.device);
  // The output folder is made (and found usable) before training, not after an hour of it.
  if (!cmd.out.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(cmd.out, ec);
    if (!std::filesystem::is_directory(cmd.out))
      throw UsageError("--out " + cmd.out + ": not a folder and cannot be made one" +
                       (ec ? " (" + ec.message() + ")" : std::string()));
  }
  const Dna dna = load_dna(cmd.dna);
  DataOptions dopts;
  dopts.val_fraction = cmd.val_fraction;
  dopts.seed = cmd.seed;
  dopts.max_train = cmd.max_train;
  const Dataset data = load_dataset(cmd.data, dopts);
  const CompiledDna plan = compile(dna, data.train.h, data.train.w, data.train.c, data.classes);
  if (!cmd.json)
    std::fprintf(stderr, "evo train: %s on %s (%d train / %d val / %d test images) on %s: %lld "
                 "parameters, %.1f MFLOPs per image\n",
                 cmd.dna.c_str(), data.name.c_str(), data.train.n, data.val.n, data.test.n,
                 device.str().c_str(), static_cast<long long>(plan.param_count),
                 plan.forward_flops / 1e6);

  Context ctx(device, cmd.seed);
  const DeviceDataset dev = DeviceDataset::upload(data, device);
  Weights weights = cmd.weights.empty() ? init_weights(plan, ctx)
                                        : load_weights(cmd.weights, plan, device);
  Model model(plan, cmd.batch, ctx);
  model.bind(weights);

  TrainOptions topts;
  topts.steps = cmd.steps;
  topts.batch = cmd.batch;
  topts.set_augment(cmd.augment);
  topts.check_every = std::max(1, std::min(100, cmd.steps / 20));
  Progress progress(cmd.steps);
  if (!cmd.json)
    topts.on_progress = [&](int step, double loss, double img_s) {
      progress.update(step, loss, img_s, cmd.batch);
    };
  const TrainResult tr = train_model(model, dev, ctx, topts, float(dna.learning_rate));
  if (tr.failed) progress.finish_line();

  Model eval_model(plan, kEvalBatch, ctx);
  eval_model.bind(weights);
  const EvalResult val = evaluate_model(eval_model, dev, "val", ctx);
  const EvalResult test = evaluate_model(eval_model, dev, "test", ctx);

  nlohmann::json metrics = {
      {"dna", cmd.dna},
      {"data", data.name},
      {"device", device.str()},
      {"steps", tr.steps_done},
      {"batch", cmd.batch},
      {"learning_rate", dna.learning_rate},
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
      {"images_per_second", tr.seconds > 0 ? tr.steps_done * double(cmd.batch) / tr.seconds : 0}};
  if (!cmd.out.empty()) {
    std::filesystem::create_directories(cmd.out);
    save_weights(weights, cmd.out + "/weights.evow");
    write_file_atomic(cmd.out + "/metrics.json", metrics.dump(2) + "\n", "metrics");
    write_file_atomic(cmd.out + "/dna.json", to_json(dna), "DNA file");
  }
  if (cmd.json) {
    std::printf("%s\n", metrics.dump().c_str());
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

int run_eval(const EvalCommand& cmd) {
  const Device device = parse_device(cmd.device);
  DataOptions dopts;
  dopts.val_fraction = cmd.val_fraction;
  dopts.seed = cmd.seed;
  const Dataset data = load_dataset(cmd.data, dopts);
  const CompiledDna plan =
      compile(load_dna(cmd.dna), data.train.h, data.train.w, data.train.c, data.classes);
  Weights weights = load_weights(cmd.weights, plan, device);
  Context ctx(device, cmd.seed);
  const DeviceDataset dev = DeviceDataset::upload(data, device);
  Model model(plan, kEvalBatch, ctx);
  model.bind(weights);
  const EvalResult r = evaluate_model(model, dev, cmd.split, ctx);
  if (cmd.json) {
    std::printf("%s\n", nlohmann::json({{"split", cmd.split},
                                        {"images", r.n},
                                        {"correct", r.correct},
                                        {"accuracy", r.accuracy()},
                                        {"loss", r.loss}})
                            .dump()
                            .c_str());
  } else {
    std::printf("%s accuracy %.2f%% (%d of %d), loss %.4f\n", cmd.split.c_str(),
                100 * r.accuracy(), r.correct, r.n, r.loss);
  }
  return 0;
}

}  // namespace evo
