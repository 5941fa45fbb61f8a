// The training loop (the paper's recipe) and evaluation of one model on a device-resident data set.
// Not the search's bookkeeping: no population, no files except what the caller saves.
#include "evo/train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>

#include "epoch.h"

namespace evo {

namespace {

DeviceSplit upload_split(const ImageSet& set, Device device) {
  DeviceSplit s;
  s.n = set.n;
  const int64_t n = std::max(set.n, 1);
  // An empty split still gets (unused) one-element buffers so pointers are never null.
  std::vector<uint8_t> pixels = set.pixels;
  std::vector<int32_t> labels = set.labels;
  pixels.resize(std::size_t(n * std::max<int64_t>(set.image_size(), 1)));
  labels.resize(std::size_t(n));
  s.images = Tensor::from_host_bytes(pixels.data(), {int64_t(pixels.size())}, device, DType::U8);
  s.labels = Tensor::from_host_bytes(labels.data(), {n}, device, DType::I32);
  std::vector<int32_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  s.order = Tensor::from_host_bytes(order.data(), {n}, device, DType::I32);
  return s;
}

}  // namespace

const char* to_string(LrSchedule s) { return s == LrSchedule::Cosine ? "cosine" : "constant"; }

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "cosine") return LrSchedule::Cosine;
  throw UsageError("unknown learning-rate schedule '" + name.substr(0, 40) +
                   "': expected constant or cosine");
}

float scheduled_rate(const TrainOptions& opts, float learning_rate, double progress) {
  const double t = std::clamp(progress, 0.0, 1.0);
  // The warm-up's first step gets a small share, not 0: a step at rate 0 would be wasted.
  const double warm = opts.warmup > 0 && t < opts.warmup ? (t + 0.01 * opts.warmup) / opts.warmup
                                                         : 1.0;
  const double shape = opts.schedule == LrSchedule::Cosine
                           ? 0.5 * (1.0 + std::cos(3.14159265358979323846 * t))
                           : 1.0;
  // A float times 1.0 in double rounds back to itself: the constant rate is the DNA's, exactly.
  return float(double(learning_rate) * warm * shape);
}

bool graphs_enabled_by_default() {
  const char* v = std::getenv("EVO_GRAPHS");
  return !(v && std::strcmp(v, "0") == 0);
}

DeviceDataset DeviceDataset::upload(const Dataset& data, Device device) {
  DeviceDataset d;
  d.name = data.name;
  d.h = data.train.h;
  d.w = data.train.w;
  d.c = data.train.c;
  d.classes = data.classes;
  d.train = upload_split(data.train, device);
  d.val = upload_split(data.val, device);
  d.test = upload_split(data.test, device);
  d.host_train_labels = data.train.labels;
  // The loaders give statistics in pixel units; the kernels standardise v/255.
  std::vector<float> mean(std::size_t(d.c)), inv_std(std::size_t(d.c));
  for (int c = 0; c < d.c; ++c) {
    mean[c] = data.mean[c] / 255.0f;
    inv_std[c] = 255.0f / std::max(data.std[c], 1e-3f);
  }
  d.mean = Tensor::from_host(mean, {d.c}, device);
  d.inv_std = Tensor::from_host(inv_std, {d.c}, device);
  return d;
}

const DeviceSplit& DeviceDataset::split(const std::string& which) const {
  if (which == "train") return train;
  if (which == "val") return val;
  if (which == "test") return test;
  throw UsageError("unknown split '" + which + "': expected train, val or test");
}

TrainResult train_model(Model& model, const DeviceDataset& data, Context& ctx,
                        const TrainOptions& opts, float learning_rate) {
  TrainResult result;
  const int batch = std::min(opts.batch, model.max_batch());
  if (data.train.n < batch)
    throw Error("the training set of " + data.name + " has " + std::to_string(data.train.n) +
                " images, fewer than one batch of " + std::to_string(batch) +
                ": use more training images (--max-train) or a smaller --batch");
  const OpTable& op = ops(ctx.device().kind);
  const auto start = std::chrono::steady_clock::now();

  // A fresh permutation of the training set each epoch, on the device; batches are slices of it.
  detail::EpochOrder order(data, batch, 0, batch, ctx);
  // Step s's crops and flips draw counters base + s * batch + i (next_batch writes s * batch to
  // the device), which is what taking `batch` counters of ctx.rng() per step gives: the host
  // still takes them, so that whoever uses ctx.rng() after training sees the same state.
  const PhiloxState base = ctx.rng();
  // The rate of the step about to run (step_ops reads it: a scheduled rate turns graphs off).
  float rate = learning_rate;
  // One training step, as launched ops or, captured, as one graph.
  auto step_ops = [&] {
    order.queue_next(ctx, op);
    op.augment_batch(ctx, data.train.images.data<uint8_t>(), order.indices(), batch, data.h,
                     data.w, data.c, opts.pad, opts.flip, data.mean.data<float>(),
                     data.inv_std.data<float>(), base, order.rng_offset(), model.input());
    model.forward(batch, true);
    model.loss(order.labels(), batch, true);
    model.backward(batch);
    model.sgd_step(rate, opts.momentum, opts.weight_decay);
  };
  // Step 0 runs as launched ops (the arena and cuBLAS reach their steady state: nothing may
  // allocate inside a capture); step 1 is captured, and that graph is replayed from then on.
  bool graphs = ctx.device().is_gpu_like() && opts.schedule == LrSchedule::Constant &&
                (opts.graphs >= 0 ? opts.graphs > 0 : graphs_enabled_by_default());
  struct GraphGuard {
    DeviceBackend& backend;
    void* graph = nullptr;
    ~GraphGuard() { backend.destroy_graph(graph); }
  } graph{ctx.backend()};

  detail::LossChecks checks(batch, start);
  for (int step = 0; step < opts.steps; ++step) {
    if (opts.stop && opts.stop->load(std::memory_order_relaxed)) {
      result.interrupted = true;
      break;
    }
    // One clock read per step (~25 ns) against steps of 0.1-100 ms.
    const double elapsed =
        opts.time_budget > 0
            ? std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            : 0;
    if (opts.time_budget > 0 && elapsed >= opts.time_budget) break;
    rate = scheduled_rate(opts, learning_rate,
                          opts.time_budget > 0 ? elapsed / opts.time_budget
                                               : double(step) / opts.steps);
    order.prepare(step, ctx);
    ctx.rng().take(uint64_t(batch));
    if (graph.graph) {
      ctx.backend().launch_graph(graph.graph, ctx.stream());
    } else if (graphs && step >= 1) {
      // A capture CUDA refuses (an op that synchronises or allocates: a bug, but one that must
      // not fail every child of a search) ends it; the training goes on with launched ops, and
      // the result says why.
      try {
        ctx.backend().begin_capture(ctx.stream());
        try {
          step_ops();
        } catch (...) {
          try {
            (void)ctx.backend().end_capture(ctx.stream());
          } catch (...) {
          }
          throw;
        }
        graph.graph = ctx.backend().end_capture(ctx.stream());
      } catch (const CudaError& e) {
        if (is_sticky_cuda_error(e.code())) throw;
        graphs = false;
        result.graph_failure = e.what();
      }
      if (graph.graph) {
        ctx.backend().launch_graph(graph.graph, ctx.stream());
        result.graphed = true;
      } else {
        step_ops();
      }
    } else {
      step_ops();
    }
    result.steps_done = step + 1;

    const bool check = (step + 1) % opts.check_every == 0 || step + 1 == opts.steps;
    if (check) {
      const LossResult r = detail::read_loss(model, ctx);
      if (!checks.record(result, opts, step + 1, double(r.loss_sum) / batch, rate)) break;
    }
  }
  // A time budget that ended between checks: the last step's loss is still read, so final_loss
  // and the NaN check cover the whole training.
  if (opts.time_budget > 0 && result.steps_done > 0 && result.steps_done % opts.check_every != 0 &&
      result.steps_done != opts.steps && !result.failed && !result.interrupted) {
    const LossResult r = detail::read_loss(model, ctx);
    checks.record(result, opts, result.steps_done, double(r.loss_sum) / batch, rate);
  }
  ctx.synchronize();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.flops = model.plan().train_flops * double(batch) * double(result.steps_done);
  return result;
}

EvalResult evaluate_model(Model& model, const DeviceDataset& data, const std::string& split_name,
                          Context& ctx, bool keep_probabilities) {
  const DeviceSplit& split = data.split(split_name);
  const OpTable& op = ops(ctx.device().kind);
  EvalResult result;
  const int classes = model.plan().classes;
  if (keep_probabilities) result.probabilities.resize(std::size_t(split.n) * classes);
  std::vector<float> logits;
  double loss_sum = 0;
  for (int i = 0; i < split.n; i += model.max_batch()) {
    const int b = std::min(model.max_batch(), split.n - i);
    op.augment_batch(ctx, split.images.data<uint8_t>(), split.order.data<int32_t>() + i, b, data.h,
                     data.w, data.c, 0, false, data.mean.data<float>(), data.inv_std.data<float>(),
                     PhiloxState{}, nullptr, model.input());
    model.forward(b, false);
    model.loss(split.labels.data<int32_t>() + i, b, false);
    const LossResult r = detail::read_loss(model, ctx);
    loss_sum += r.loss_sum;
    result.correct += r.correct;
    result.n += b;
    if (keep_probabilities) {
      logits.resize(std::size_t(b) * classes);
      ctx.backend().copy(logits.data(), model.logits(), logits.size() * 4,
                         CopyKind::DeviceToHost, ctx.stream());
      ctx.synchronize();
      for (int j = 0; j < b; ++j) {
        const float* z = logits.data() + std::size_t(j) * classes;
        float* p = result.probabilities.data() + (std::size_t(i) + j) * classes;
        const float zmax = *std::max_element(z, z + classes);
        double total = 0;
        for (int k = 0; k < classes; ++k) total += (p[k] = std::exp(z[k] - zmax));
        for (int k = 0; k < classes; ++k) p[k] = float(p[k] / total);
      }
    }
  }
  result.loss = result.n ? loss_sum / result.n : 0;
  result.flops = model.plan().forward_flops * double(result.n);
  return result;
}

double ensemble_accuracy(const std::vector<double>& summed, const std::vector<int32_t>& labels,
                         int classes) {
  if (labels.empty() || summed.empty()) return NAN;
  int correct = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const double* p = summed.data() + i * std::size_t(classes);
    correct += int(std::max_element(p, p + classes) - p) == labels[i];
  }
  return double(correct) / double(labels.size());
}

}  // namespace evo
