// A model built from a compiled DNA: its weights (keyed by stable id), the weight file, weight
// inheritance, and the static forward/backward graph (our autograd). Not the training loop (train.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "evo/context.h"
#include "evo/dna.h"
#include "evo/error.h"
#include "evo/ops.h"
#include "evo/tensor.h"
#include "evo/weight_file.h"

namespace evo {

// Every weight tensor of a model (trainable parameters and batch-norm running statistics), keyed
// by ParamInfo::key ("e7", "v3.gamma", "fc.weight", ...), on one device.
struct Weights {
  std::map<std::string, Tensor> tensors;

  const Tensor& at(const std::string& key) const;
  bool contains(const std::string& key) const { return tensors.count(key) != 0; }
  Weights to(Device device) const;
};

// Fresh weights for `plan` on the context's device: He et al. 2015 for convolutions and the fully
// connected layer (a convolution into a vertex summing k in-edges drawn with variance / k, the
// paper's init_scale), zero biases, batch-norm gamma 1 and beta 0, running mean 0 and variance 1.
// Randomness comes from ctx.rng(), so the same seed gives the same weights on every backend.
Weights init_weights(const CompiledDna& plan, Context& ctx);

// How a child's weights come from its parent's.
// - Paper (Real et al. 2017, the default on GPUs): a tensor whose key and shape are unchanged is
//   kept, every other one is freshly initialised. A widened layer changes the shape of every
//   tensor downstream of it, so such a child starts over from random weights there.
// - Keep (beyond the paper; the CPU default, see README "Search defaults"): as paper for unchanged
//   tensors; a tensor whose shape changed but that reads the same vertex as in the parent (not a
//   convolution REMOVE-CONVOLUTION reconnected) keeps the parent's values where the two overlap:
//   convolutions keep every old output channel's weights on the old inputs and old taps (a filter
//   resized keeps its centre) with 0 on new inputs and taps, and new output channels freshly drawn;
//   the classifier gives new input columns 0; batch-norm vectors keep the old channels. So a
//   widened or resized layer computes what the parent's did on the old channels and what reads
//   the new channels starts ignoring them. A convolution the parent did not have (an inserted
//   one, C_out == C_in) starts as the identity filter. Details in data/dna/README.md.
enum class Inheritance { Paper, Keep };
const char* to_string(Inheritance h);  // "paper", "keep"
// Throws UsageError naming both spellings.
Inheritance parse_inheritance(const std::string& name);

// The child's weights from its parent's by rule `how`. Tensors of the parent the child does not
// have are dropped. Returns in *kept (when not null) the number of tensors kept whole.
// Randomness: every tensor not kept whole takes its fresh draw from ctx.rng() in both modes, so
// the random stream does not depend on the rule.
Weights inherit_weights(const CompiledDna& parent, const Weights& parent_weights,
                        const CompiledDna& child, Context& ctx,
                        Inheritance how = Inheritance::Paper, int* kept = nullptr);

// The weight file ("evo-weights/1", documented in data/dna/README.md): magic, version, tensor
// count, then per tensor its key, shape and little-endian f32 values, and a CRC-32 of all that.
// Written to a temporary file and renamed, so a crash never leaves a half-written file.
void save_weights(const Weights& weights, const std::string& path);
// Reads a weight file and checks it against `plan` (same keys and shapes), on `device`. Throws
// WeightsError naming the file and what is wrong (truncated at offset N, bad checksum, a tensor of
// another shape, a missing tensor).
Weights load_weights(const std::string& path, const CompiledDna& plan, Device device);

// The graph of one DNA, ready to run on a batch of up to `max_batch` images: every buffer is
// allocated once at construction (no device allocation inside a step), then forward and backward
// walk the static graph in topological and reverse topological order.
class Model {
 public:
  Model(const CompiledDna& plan, int max_batch, Context& ctx);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const CompiledDna& plan() const { return plan_; }
  int max_batch() const { return max_batch_; }

  // Points the model at `weights` (which must outlive the model's use of them) and allocates the
  // gradient and momentum buffers of the trainable ones (zeroed).
  void bind(Weights& weights);

  // x: [max_batch, H, W, C], the input the forward pass reads (augment_batch writes here).
  float* input() { return input_; }
  // Runs the forward pass on the first n images of input(). train: batch statistics (and running
  // statistics updated); otherwise the running statistics (inference).
  void forward(int n, bool train);
  // logits: [n, classes], valid after forward().
  const float* logits() const { return logits_; }
  // Softmax cross-entropy of the last forward pass; writes the device LossResult at loss_result()
  // and, when `with_gradient`, the gradient for backward(): of the mean loss, or of the summed
  // loss / grad_n when grad_n > 0 (a data-parallel replica: grad_n is the global batch).
  void loss(const int32_t* labels, int n, bool with_gradient, int grad_n = 0);
  const LossResult* loss_result() const { return loss_result_; }
  // Gradients of every trainable weight from the last loss(.., true).
  void backward(int n);
  // SGD with momentum on every trainable weight; weight decay on conv filters and fc.weight only.
  void sgd_step(float lr, float momentum, float weight_decay);

  // The gradient buffer of a trainable weight (for gradient checks).
  float* gradient(const std::string& key);
  // Every trainable weight's gradient lies in this one buffer (in the plan's parameter order,
  // each 256-byte aligned, the gaps zero), so that data-parallel training sums all of them with
  // one all-reduce. Valid after bind().
  float* gradients() const { return grad_begin_; }
  int64_t gradient_floats() const { return grad_floats_; }

 private:
  struct VertexBuffers {
    float* sum = nullptr;    // pre-activation: sum of the in-edges' results
    float* act = nullptr;    // post-activation (== sum for linear vertices)
    float* d_act = nullptr;  // gradient w.r.t. act
    float* d_sum = nullptr;  // gradient w.r.t. sum (== d_act for linear vertices)
    float* save_mean = nullptr;
    float* save_invstd = nullptr;
    bool needs_grad = false;  // false for the input vertex: nothing to learn upstream
  };
  struct Param {
    std::string key;
    ParamKind kind;
    int64_t elements;
    float* value = nullptr;
    float* grad = nullptr;
    float* velocity = nullptr;
  };

  float* param(const std::string& key) const;
  float* grad(const std::string& key) const;
  ConvGeometry geometry(const EdgePlan& e, int n) const;
  // Writes edge e's result, brought to its target's shape, into `out`.
  void edge_forward(const EdgePlan& e, int n, float* out);
  // Backward of edge e from d_sum of its target: the filter gradient of a conv edge, and the
  // gradient w.r.t. the source's act (into `out`) when the source needs one.
  void edge_backward(const EdgePlan& e, int n, float* out);

  CompiledDna plan_;
  int max_batch_;
  Context& ctx_;
  const OpTable& ops_;
  std::vector<VertexBuffers> vbuf_;
  Tensor storage_;        // every activation, gradient and scratch buffer: one allocation
  Tensor param_storage_;  // gradients (all first, see gradients()), then momentum
  float* grad_begin_ = nullptr;
  int64_t grad_floats_ = 0;
  float* input_ = nullptr;
  // Three buffers of the largest activation any edge touches: reshape intermediates, and a
  // second summand for vertices with several in-edges (or sources with several out-edges).
  float* scratch_a_ = nullptr;
  float* scratch_b_ = nullptr;
  float* scratch_c_ = nullptr;
  float* pooled_ = nullptr;
  float* d_pooled_ = nullptr;
  float* logits_ = nullptr;
  float* d_logits_ = nullptr;
  LossResult* loss_result_ = nullptr;
  std::vector<Param> params_;
  std::map<std::string, std::size_t> param_index_;
  Weights* weights_ = nullptr;
};

}  // namespace evo
