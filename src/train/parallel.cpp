// Data-parallel training on several GPUs (train.h's train_data_parallel): one host thread per
// device, each with its own context, data set copy, replica of the model and shard of every
// batch; gradients summed by one all-reduce per step. Not the single-device loop (train.cpp),
// whose draws it reproduces, and not NCCL (cuda/collective.cu).
//
// Why this is exact up to float sums: replica r's loss gradient is (softmax - onehot) / B on its
// images (Model::loss with grad_n = B), so backward gives d(sum over its shard of loss) / B, and
// the sum over replicas is d(mean over the global batch) / d(weights): what one device with batch
// B computes, but summed in another order. Batch norm is the exception: its statistics are per
// replica (over B/R images), so a net with batch norm trains like one with smaller batch-norm
// batches, as under PyTorch's DistributedDataParallel.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

#include "epoch.h"
#include "evo/train.h"

namespace evo {

namespace {

// What the replicas share on the host: a barrier at each loss check (so that every replica sees
// the same global loss and stop decision, and leaves the loop at the same step: a replica that
// left early would hang the others' next all-reduce), and the first failure.
class Rendezvous {
 public:
  explicit Rendezvous(int ranks) : ranks_(ranks), losses_(std::size_t(ranks)) {}

  // Publishes rank's loss sum and waits for every rank's; returns their sum in rank order (the
  // same double on every rank), and the stop decision rank 0 published. Throws when aborted.
  double exchange(int rank, double loss_sum, bool* stop) {
    std::unique_lock<std::mutex> lock(mutex_);
    losses_[std::size_t(rank)] = loss_sum;
    if (rank == 0) stop_ = stop && *stop;
    const uint64_t generation = generation_;
    if (++arrived_ == ranks_) {
      arrived_ = 0;
      total_ = 0;
      for (double l : losses_) total_ += l;
      decided_stop_ = stop_;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation || aborted_; });
    }
    if (aborted_) throw Error("stopped because another replica failed");
    if (stop) *stop = decided_stop_;
    return total_;
  }

  // Records the first failure (later ones are consequences of it) and releases every waiter.
  void fail(const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_.empty()) error_ = what;
    aborted_ = true;
    cv_.notify_all();
  }
  std::string error() {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int ranks_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  std::vector<double> losses_;
  double total_ = 0;
  bool stop_ = false, decided_stop_ = false, aborted_ = false;
  std::string error_;
};

}  // namespace

TrainResult train_data_parallel(const CompiledDna& plan, Weights& weights, const Dataset& data,
                                const std::vector<Device>& devices, uint64_t seed,
                                const TrainOptions& opts, float learning_rate) {
  const int ranks = int(devices.size());
  if (ranks < 1) throw UsageError("data-parallel training needs at least one device");
  if (opts.time_budget > 0)
    throw UsageError("data-parallel training takes a number of steps, not a time budget (its "
                     "replicas must agree on every step's learning rate): give --steps");
  std::vector<int> ordinals;
  for (const Device& d : devices) {
    if (!d.is_gpu_like() || d.kind != devices[0].kind)
      throw UsageError("data-parallel training runs on GPUs of one kind (cuda or emu), not on " +
                       d.str());
    if (std::find(ordinals.begin(), ordinals.end(), d.ordinal) != ordinals.end())
      throw UsageError("device " + d.str() + " is named twice");
    ordinals.push_back(d.ordinal);
  }
  const int batch = opts.batch;
  if (batch < ranks)
    throw UsageError("a global batch of " + std::to_string(batch) + " images cannot feed " +
                     std::to_string(ranks) + " GPUs: use --batch " + std::to_string(ranks) +
                     " or more");
  if (data.train.n < batch)
    throw Error("the training set of " + data.name + " has " + std::to_string(data.train.n) +
                " images, fewer than one batch of " + std::to_string(batch) +
                ": use more training images (--max-train) or a smaller --batch");
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Communicator> comm =
      backend_for(devices[0].kind).create_communicator(ordinals);
  Rendezvous meet(ranks);
  TrainResult result;  // written by rank 0 only

  auto replica = [&](int rank) {
    const int first = int(int64_t(rank) * batch / ranks);
    const int shard = int(int64_t(rank + 1) * batch / ranks) - first;
    Context ctx(devices[std::size_t(rank)], seed);  // the same draws on every replica
    const DeviceDataset dev = DeviceDataset::upload(data, ctx.device());
    // Rank 0 trains the caller's weights; the others start from zeros and receive rank 0's
    // values by broadcast, one grouped call for all tensors (std::map: the same order on every
    // rank).
    Weights own;
    if (rank > 0)
      for (const auto& [key, t] : weights.tensors)
        own.tensors.emplace(key, Tensor::zeros(t.shape(), ctx.device()));
    Weights& w = rank == 0 ? weights : own;
    comm->group_start();
    for (auto& [key, t] : w.tensors)
      comm->broadcast(rank, t.data<float>(), std::size_t(t.numel()), 0, ctx.stream());
    comm->group_end();

    Model model(plan, shard, ctx);
    model.bind(w);
    const OpTable& op = ops(ctx.device().kind);

    // train_model's draws exactly: the shuffle seed, then B augmentation counters per step, of
    // which this replica's images use [first, first + shard) (next_batch adds first).
    detail::EpochOrder order(dev, batch, first, shard, ctx);
    const PhiloxState base = ctx.rng();

    detail::LossChecks checks(batch, start);
    for (int step = 0; step < opts.steps; ++step) {
      order.prepare(step, ctx);
      ctx.rng().take(uint64_t(batch));
      order.queue_next(ctx, op);
      op.augment_batch(ctx, dev.train.images.data<uint8_t>(), order.indices(), shard, dev.h,
                       dev.w, dev.c, opts.pad, opts.flip, dev.mean.data<float>(),
                       dev.inv_std.data<float>(), base, order.rng_offset(), model.input());
      model.forward(shard, true);
      model.loss(order.labels(), shard, true, batch);
      model.backward(shard);
      comm->all_reduce(rank, model.gradients(), std::size_t(model.gradient_floats()), false,
                       ctx.stream());
      // Every replica computes the same rate from the step alone: the weights stay identical.
      model.sgd_step(scheduled_rate(opts, learning_rate, double(step) / opts.steps),
                     opts.momentum, opts.weight_decay);
      if (opts.on_replica_step) opts.on_replica_step(rank, step + 1, w, ctx);

      const bool check = (step + 1) % opts.check_every == 0 || step + 1 == opts.steps;
      if (!check) continue;
      const LossResult r = detail::read_loss(model, ctx);
      // Every replica leaves at the same step: on rank 0's stop decision or a non-finite loss.
      bool stop = rank == 0 && opts.stop && opts.stop->load(std::memory_order_relaxed);
      const double loss = meet.exchange(rank, double(r.loss_sum), &stop) / batch;
      if (rank == 0) {
        result.steps_done = step + 1;
        checks.record(result, opts, step + 1, loss, learning_rate);
      }
      if (!std::isfinite(loss)) break;  // every rank sees the same sum: all leave here together
      if (stop) {
        if (rank == 0) result.interrupted = step + 1 < opts.steps;
        break;
      }
    }
    // The running statistics: the mean over the replicas, in one grouped call.
    comm->group_start();
    for (const ParamInfo& p : plan.params)
      if (!p.trainable())
        comm->all_reduce(rank, w.at(p.key).data<float>(), std::size_t(p.elements()), true,
                         ctx.stream());
    comm->group_end();
    ctx.synchronize();
  };

  std::vector<std::thread> threads;
  threads.reserve(std::size_t(ranks));
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        replica(r);
      } catch (const std::exception& e) {
        meet.fail(devices[std::size_t(r)].str() + " (replica " + std::to_string(r) + " of " +
                  std::to_string(ranks) + "): " + e.what());
        comm->abort();
      }
    });
  for (std::thread& t : threads) t.join();
  const std::string error = meet.error();
  if (!error.empty()) throw Error("data-parallel training failed on " + error);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.flops = plan.train_flops * double(batch) * double(result.steps_done);
  return result;
}

}  // namespace evo
