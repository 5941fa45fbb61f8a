// The order in which training draws its batches, shared by train_model (train.cpp) and
// train_data_parallel (parallel.cpp) so that both draw exactly the same images: a fresh
// permutation of the training set each epoch, shuffled on the host from the context's random
// stream and uploaded with the labels in that order; a batch is a slice of it, which the
// next_batch op copies, from a step counter in device memory, into fixed buffers that the
// augmentation and the loss read (so a training step captured in a CUDA graph draws a new batch
// at every replay); and the loss check both loops do. Not the augmentation itself and not a data
// loader.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "evo/ops.h"
#include "evo/train.h"

namespace evo::detail {

class EpochOrder {
 public:
  // Draws images [first, first + n) of every global batch of `batch` (a data-parallel replica's
  // shard; first = 0, n = batch on one device). Takes one block of ctx's random stream (the
  // shuffle's seed), as train_model always has.
  EpochOrder(const DeviceDataset& data, int batch, int first, int n, Context& ctx)
      : labels_(data.host_train_labels),
        batch_(batch),
        first_(first),
        n_(n),
        per_epoch_(data.train.n / batch),
        perm_(std::size_t(data.train.n)),
        perm_labels_(perm_.size()),
        perm_dev_(Tensor::empty({int64_t(perm_.size())}, ctx.device(), DType::I32)),
        perm_labels_dev_(Tensor::empty({int64_t(perm_.size())}, ctx.device(), DType::I32)),
        // [0, n): indices, [n, 2n): labels, then the step (int64) and the augmentation offset
        // (uint64), 8-byte aligned.
        cursor_(Tensor::zeros({2 * int64_t(n) + 4}, ctx.device(), DType::I32)) {
    std::iota(perm_.begin(), perm_.end(), 0);
    const Philox4 seed_bits = ctx.rng().take(1).block(0);
    shuffler_.seed((uint64_t(seed_bits.v[0]) << 32) | seed_bits.v[1]);
  }

  // Call on the host before each step: at an epoch's first step, shuffles and uploads the next
  // permutation (after the previous epoch's batches, which read the old one, are done). Never
  // inside a captured step: it is what changes between epochs, outside the graph.
  void prepare(int step, Context& ctx) {
    if (step % per_epoch_ != 0) return;
    std::shuffle(perm_.begin(), perm_.end(), shuffler_);
    for (std::size_t i = 0; i < perm_.size(); ++i) perm_labels_[i] = labels_[std::size_t(perm_[i])];
    ctx.synchronize();
    ctx.backend().copy(perm_dev_.raw(), perm_.data(), perm_.size() * 4, CopyKind::HostToDevice,
                       ctx.stream());
    ctx.backend().copy(perm_labels_dev_.raw(), perm_labels_.data(), perm_.size() * 4,
                       CopyKind::HostToDevice, ctx.stream());
  }
  // Queues next_batch: this step's indices, labels and augmentation offset into the fixed
  // buffers below, from the device's step counter, which it advances. Inside a captured step
  // this is what makes every replay draw the next batch.
  void queue_next(Context& ctx, const OpTable& op) {
    op.next_batch(ctx, step_counter(), per_epoch_, batch_, first_, n_, perm_dev_.data<int32_t>(),
                  perm_labels_dev_.data<int32_t>(), indices(), labels(), rng_offset());
  }
  int32_t* indices() const { return cursor_.data<int32_t>(); }
  int32_t* labels() const { return cursor_.data<int32_t>() + n_; }
  uint64_t* rng_offset() const { return reinterpret_cast<uint64_t*>(tail()) + 1; }

 private:
  int64_t* step_counter() const { return reinterpret_cast<int64_t*>(tail()); }
  int32_t* tail() const {
    return cursor_.data<int32_t>() + 2 * int64_t(n_);  // 8-byte aligned: the buffer is 256
  }

  const std::vector<int32_t>& labels_;
  int batch_, first_, n_, per_epoch_;
  std::vector<int32_t> perm_, perm_labels_;
  std::mt19937_64 shuffler_;
  Tensor perm_dev_, perm_labels_dev_, cursor_;
};

// The device's LossResult of the model's last loss(), read through the context's pinned scratch
// (context.h says why); waits for the stream.
inline LossResult read_loss(const Model& model, Context& ctx) {
  static_assert(sizeof(LossResult) <= Context::kHostScratchBytes);
  ctx.backend().copy(ctx.host_scratch(), model.loss_result(), sizeof(LossResult),
                     CopyKind::DeviceToHost, ctx.stream());
  ctx.synchronize();
  LossResult r;
  std::memcpy(&r, ctx.host_scratch(), sizeof r);
  return r;
}

// What both trainers do with the loss of a check: a non-finite one fails the result with the
// reason; a finite one is the result's final loss and goes to opts.on_progress with the images
// per second since the previous check.
class LossChecks {
 public:
  LossChecks(int batch, std::chrono::steady_clock::time_point start)
      : batch_(batch), last_(start) {}
  // `steps`: the steps done so far. False when training must stop (result.failed is set).
  bool record(TrainResult& result, const TrainOptions& opts, int steps, double loss,
              float learning_rate) {
    if (!std::isfinite(loss)) {
      result.failed = true;
      result.failure = "training loss is " + std::string(std::isnan(loss) ? "NaN" : "infinite") +
                       " at step " + std::to_string(steps) + " (learning rate " +
                       std::to_string(learning_rate) + ")";
      return false;
    }
    result.final_loss = loss;
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - last_).count();
    const double img_s = dt > 0 ? double(steps - last_steps_) * batch_ / dt : 0;
    if (opts.on_progress) opts.on_progress(steps, loss, img_s);
    last_ = now;
    last_steps_ = steps;
    return true;
  }

 private:
  int batch_;
  std::chrono::steady_clock::time_point last_;
  int last_steps_ = 0;
};

}  // namespace evo::detail
