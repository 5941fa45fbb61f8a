// Training and evaluation of one individual with the paper's recipe, on any backend, with the data
// set resident on the device. Not the search: one DNA, one set of weights, one context.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "evo/context.h"
#include "evo/data.h"
#include "evo/model.h"

namespace evo {

// One split of a data set on a device: uint8 images [n, H, W, C] and int32 labels.
struct DeviceSplit {
  int n = 0;
  Tensor images;  // u8 [n, H, W, C]
  Tensor labels;  // i32 [n]
  Tensor order;   // i32 [n]: 0, 1, ..., n-1 (the indices of an evaluation pass)
};

// The whole data set on the context's device, with the per-channel standardisation constants.
struct DeviceDataset {
  std::string name;
  int h = 0, w = 0, c = 0, classes = 0;
  DeviceSplit train, val, test;
  Tensor mean;     // [C], in 0..1 units
  Tensor inv_std;  // [C]
  std::vector<int32_t> host_train_labels;

  static DeviceDataset upload(const Dataset& data, Device device);
  const DeviceSplit& split(const std::string& name) const;  // "train", "val", "test"
};

// Images per evaluation batch (validation and test passes of every command and the search).
// Forward only, so larger than a training batch costs only activations: 250 images of a
// 28x28x16 net are ~50 MB, and a big reference net on 32x32x3 stays under ~1 GB.
inline constexpr int kEvalBatch = 250;

// How the learning rate moves within one training. Constant: the DNA's rate at every step (the
// paper). Cosine: the rate times 0.5 * (1 + cos(pi * t)), t the share of the training done (of
// the steps, or of TrainOptions::time_budget when one is set), so it falls from the DNA's rate to
// ~0 at the end (Loshchilov & Hutter 2017). Annealed weights are what the validation pass then
// measures: a short training ends in a minimum instead of bouncing around one at full rate.
enum class LrSchedule { Constant, Cosine };
const char* to_string(LrSchedule s);  // "constant", "cosine"
LrSchedule parse_lr_schedule(const std::string& name);  // UsageError naming both spellings

// The paper's recipe (Real et al. 2017, section 4): SGD with momentum 0.9, batch 50, weight decay
// 1e-4, 25,600 steps, the learning rate from the DNA; augmentation as in He et al. 2016.
struct TrainOptions {
  int steps = 25600;
  int batch = 50;
  float momentum = 0.9f;
  float weight_decay = 1e-4f;
  int pad = 4;        // random-crop padding (pixels)
  bool flip = true;   // random horizontal flips
  // The paper's crops and flips (pad 4, flips) when on; neither when off.
  void set_augment(bool on) {
    pad = on ? 4 : 0;
    flip = on;
  }
  LrSchedule schedule = LrSchedule::Constant;
  // A linear warm-up over this share of the training (0: none; steps or time as the schedule):
  // the rate rises from ~0 to the schedule's, which fresh weights at an evolved rate need (a net
  // widened 2x from scratch at 0.07 diverged to NaN within 100 steps without one).
  double warmup = 0;
  // Seconds of training (0: none). When set, training ends at the first step that starts after
  // this long (`steps` is then a maximum) and a cosine schedule follows the clock, so it reaches
  // ~0 when the time is up whatever the net's speed: what a phase with a deadline needs. The
  // result says how many steps that was. Not for data-parallel training (its replicas must agree
  // on every step's rate, and their clocks do not).
  double time_budget = 0;
  int check_every = 100;  // read the loss back (and check it is finite) every this many steps
  // When set and true, training stops at the next step (the result says interrupted).
  const std::atomic<bool>* stop = nullptr;
  // Called after each check with (step, the loss of that step's batch, images per second since
  // the previous check).
  std::function<void(int, double, double)> on_progress;
  // CUDA graphs on GPU-like devices (CUDA, emu): step 0 runs as launched ops, step 1 is captured
  // into one graph (next_batch, augmentation, forward, loss, backward, SGD) and replayed for every
  // later step: one launch per step instead of dozens, with bit-identical results (the batch and
  // the crops come from a device-side step counter the graph advances itself). -1: on unless the
  // environment says EVO_GRAPHS=0; 0: off; 1: on. Ignored on the CPU and by data-parallel
  // training (whose all-reduce the emulator cannot capture), and off under a schedule other than
  // constant (a graph replays the rate it captured).
  int graphs = -1;
  // Data-parallel training only, for tests: called in every replica's thread after each step's
  // SGD update with (rank, step, that replica's weights and context).
  std::function<void(int, int, const Weights&, Context&)> on_replica_step;
};

struct TrainResult {
  int steps_done = 0;
  double final_loss = 0;  // training loss of the last checked batch
  double seconds = 0;
  double flops = 0;       // training FLOPs, counted as the paper does (per-step FLOPs x steps)
  bool failed = false;
  std::string failure;    // why training stopped early ("loss is NaN at step 1200", ...)
  bool interrupted = false;  // stopped by TrainOptions::stop
  bool graphed = false;      // the steps after the first ran as one CUDA graph each
  std::string graph_failure; // why a capture was refused, when it was (the steps then ran as ops)
};

// The rate of a step under opts.schedule: `progress` is the share of the training done before the
// step (step / steps, or elapsed / time_budget), clamped to [0, 1].
float scheduled_rate(const TrainOptions& opts, float learning_rate, double progress);

// False when the environment says EVO_GRAPHS=0 (TrainOptions::graphs = -1 follows it).
bool graphs_enabled_by_default();

// Trains `model` (bound to its weights) in place. A NaN or infinite loss ends training with
// failed = true and the reason; it does not throw.
TrainResult train_model(Model& model, const DeviceDataset& data, Context& ctx,
                        const TrainOptions& opts, float learning_rate);

// Data-parallel training of one model on several GPUs (or emulated ones: every device in
// `devices` of one kind, CUDA or EMU, distinct ordinals), one host thread and stream per device.
// opts.batch is the global batch: replica r takes images [r*B/R, (r+1)*B/R) of every batch that
// train_model would draw with the same seed (the same epoch permutation and the same augmentation
// draws), computes the gradient of its shard's summed loss / B, and one all-reduce (sum) of the
// flat gradient buffer per step makes every replica's gradient that of the global batch's mean
// loss; every replica then applies the same SGD step, so the weights stay identical. Weights
// start identical by broadcast from rank 0. Batch norm uses each replica's own batch statistics
// (as PyTorch's DistributedDataParallel does by default); the running statistics are averaged over
// the replicas when training ends. On entry `weights` lives on devices[0] (rank 0 trains it in
// place); on return it holds the trained weights. Without batch norm, this is train_model with
// batch B up to the order of the floating-point sums (tests/test_train.cpp measures how close).
// A failure in one replica (an exception, a CUDA error) aborts the others and is rethrown naming
// the device; a NaN loss ends training with failed = true, as train_model.
TrainResult train_data_parallel(const CompiledDna& plan, Weights& weights, const Dataset& data,
                                const std::vector<Device>& devices, uint64_t seed,
                                const TrainOptions& opts, float learning_rate);

struct EvalResult {
  int n = 0;
  int correct = 0;
  double loss = 0;  // mean cross-entropy
  double accuracy() const { return n ? double(correct) / n : 0; }
  double flops = 0;  // forward FLOPs of the evaluation
  // Softmax probabilities [n, classes] when asked for (ensembles average them).
  std::vector<float> probabilities;
};

// The accuracy of an ensemble whose members' softmax probabilities (EvalResult::probabilities on
// one split) were summed into `summed` [n, classes]: per image the argmax (the first of tied
// maxima) against `labels` [n]. NaN when there are no images or no members (`summed` empty).
double ensemble_accuracy(const std::vector<double>& summed, const std::vector<int32_t>& labels,
                         int classes);

// Evaluates in inference mode (running batch-norm statistics) on a split, in batches of the
// model's capacity.
EvalResult evaluate_model(Model& model, const DeviceDataset& data, const std::string& split,
                          Context& ctx, bool keep_probabilities = false);

}  // namespace evo
