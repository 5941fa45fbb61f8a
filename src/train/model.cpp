// The static graph of a compiled DNA: one memory plan, forward in topological order, backward in
// reverse (our whole autograd). Not the weights' storage or files (weights.cpp), not training.
#include "evo/model.h"

#include <algorithm>

namespace evo {

namespace {

bool needs_reshape(const EdgePlan& e) { return e.resizes_space() || e.resizes_channels(); }

// Bytes rounded so every buffer of the plan starts 256-byte aligned, like cudaMalloc's.
int64_t aligned_floats(int64_t n) { return (n + 63) / 64 * 64; }

}  // namespace

Model::Model(const CompiledDna& plan, int max_batch, Context& ctx)
    : plan_(plan), max_batch_(max_batch), ctx_(ctx), ops_(ops(ctx.device().kind)) {
  if (max_batch < 1) throw Error("Model: the batch size must be at least 1");
  const int nv = int(plan_.vertices.size());
  vbuf_.resize(nv);
  const int input = 0;  // the backbone order starts at the input vertex

  // Which vertices need the gradient of their activation: those with something trainable at or
  // upstream of them. The input vertex never does, so the first convolution skips its
  // backward-data pass, as every framework does.
  for (int v = 1; v < nv; ++v) {
    bool need = plan_.vertices[v].activation == Activation::BnRelu;
    for (int e : plan_.vertices[v].in_edges) {
      const EdgePlan& ep = plan_.edges[e];
      need = need || ep.type == EdgeType::Conv || vbuf_[ep.from].needs_grad;
    }
    vbuf_[v].needs_grad = need;
  }

  // ---- the memory plan: offsets into one allocation ----
  const int64_t B = max_batch;
  std::vector<std::pair<float**, int64_t>> wanted;
  std::vector<bool> sum_aliases_source(nv, false);
  // The backward mirror of that alias: a vertex whose only out-edge is a plain identity edge
  // receives exactly its target's d_sum as its d_act, so it reads that buffer instead of a copy.
  std::vector<int> out_degree(nv, 0), only_out_edge(nv, -1);
  for (int e = 0; e < int(plan_.edges.size()); ++e) {
    ++out_degree[plan_.edges[e].from];
    only_out_edge[plan_.edges[e].from] = e;
  }
  std::vector<bool> grad_aliases_target(nv, false);
  for (int v = 1; v < nv; ++v) {
    const int e = only_out_edge[v];
    grad_aliases_target[v] = vbuf_[v].needs_grad && out_degree[v] == 1 &&
                             plan_.edges[e].type == EdgeType::Identity &&
                             !needs_reshape(plan_.edges[e]);
  }
  int64_t scratch = 1;
  for (const EdgePlan& e : plan_.edges)
    scratch = std::max({scratch, e.in.elements(), e.out.elements(), e.reshaped.elements(),
                        int64_t(e.reshaped.h) * e.reshaped.w * e.out.c});
  const ActShape& in_shape = plan_.vertices[input].shape;
  wanted.push_back({&input_, B * in_shape.elements()});
  for (int v = 1; v < nv; ++v) {
    const VertexPlan& vp = plan_.vertices[v];
    const int64_t size = B * vp.shape.elements();
    const EdgePlan& first = plan_.edges[vp.in_edges[0]];
    // A vertex fed by one plain identity edge (INSERT-ONE-TO-ONE) reads its source's buffer.
    sum_aliases_source[v] = vp.in_edges.size() == 1 && first.type == EdgeType::Identity &&
                            !needs_reshape(first);
    if (!sum_aliases_source[v]) wanted.push_back({&vbuf_[v].sum, size});
    if (vp.activation == Activation::BnRelu) {
      wanted.push_back({&vbuf_[v].act, size});
      wanted.push_back({&vbuf_[v].save_mean, vp.shape.c});
      wanted.push_back({&vbuf_[v].save_invstd, vp.shape.c});
    }
    if (vbuf_[v].needs_grad) {
      if (!grad_aliases_target[v]) wanted.push_back({&vbuf_[v].d_act, size});
      if (vp.activation == Activation::BnRelu) wanted.push_back({&vbuf_[v].d_sum, size});
    }
  }
  const int64_t scratch_size = B * scratch;
  wanted.push_back({&scratch_a_, scratch_size});
  wanted.push_back({&scratch_b_, scratch_size});
  wanted.push_back({&scratch_c_, scratch_size});
  const int64_t c_out = plan_.output().shape.c;
  wanted.push_back({&pooled_, B * c_out});
  wanted.push_back({&d_pooled_, B * c_out});
  wanted.push_back({&logits_, B * plan_.classes});
  wanted.push_back({&d_logits_, B * plan_.classes});
  float* loss_slot = nullptr;
  wanted.push_back({&loss_slot, 64});

  int64_t total = 0;
  for (const auto& w : wanted) total += aligned_floats(w.second);
  storage_ = Tensor::empty({total}, ctx.device());
  float* base = storage_.data<float>();
  int64_t offset = 0;
  for (const auto& w : wanted) {
    *w.first = base + offset;
    offset += aligned_floats(w.second);
  }
  loss_result_ = reinterpret_cast<LossResult*>(loss_slot);

  vbuf_[input].sum = vbuf_[input].act = input_;
  for (int v = 1; v < nv; ++v) {
    VertexBuffers& b = vbuf_[v];
    if (sum_aliases_source[v]) b.sum = vbuf_[plan_.edges[plan_.vertices[v].in_edges[0]].from].act;
    if (plan_.vertices[v].activation == Activation::Linear) b.act = b.sum;
  }
  // Targets before sources, so a chain of aliases resolves to the buffer at its end.
  for (int v = nv - 1; v >= 1; --v) {
    VertexBuffers& b = vbuf_[v];
    if (grad_aliases_target[v]) b.d_act = vbuf_[plan_.edges[only_out_edge[v]].to].d_sum;
    if (plan_.vertices[v].activation == Activation::Linear) b.d_sum = b.d_act;
  }
}

void Model::bind(Weights& weights) {
  weights_ = &weights;
  params_.clear();
  param_index_.clear();
  int64_t trainable = 0;
  for (const ParamInfo& p : plan_.params) {
    const auto it = weights.tensors.find(p.key);
    if (it == weights.tensors.end()) throw Error("Model::bind: no weight tensor '" + p.key + "'");
    if (it->second.numel() != p.elements() || !(it->second.device() == ctx_.device()))
      throw Error("Model::bind: weight tensor '" + p.key + "' has the wrong size or device");
    Param q{p.key, p.kind, p.elements(), it->second.data<float>()};
    if (p.trainable()) trainable += 2 * aligned_floats(p.elements());
    param_index_[p.key] = params_.size();
    params_.push_back(q);
  }
  param_storage_ = Tensor::zeros({std::max<int64_t>(trainable, 1)}, ctx_.device());
  // Gradients first, then the momentum buffers in the same order: the gradients are one range.
  float* grad = param_storage_.data<float>();
  float* velocity = grad + trainable / 2;
  grad_begin_ = grad;
  grad_floats_ = trainable / 2;
  for (Param& q : params_) {
    const ParamInfo* info = plan_.find_param(q.key);
    if (!info->trainable()) continue;
    q.grad = grad;
    q.velocity = velocity;
    grad += aligned_floats(q.elements);
    velocity += aligned_floats(q.elements);
  }
}

float* Model::param(const std::string& key) const {
  const auto it = param_index_.find(key);
  if (it == param_index_.end()) throw Error("Model: unknown weight '" + key + "' (bind first)");
  return params_[it->second].value;
}

float* Model::grad(const std::string& key) const {
  const auto it = param_index_.find(key);
  if (it == param_index_.end()) throw Error("Model: unknown weight '" + key + "' (bind first)");
  return params_[it->second].grad;
}

float* Model::gradient(const std::string& key) { return grad(key); }

ConvGeometry Model::geometry(const EdgePlan& e, int n) const {
  ConvGeometry g;
  g.n = n;
  g.h = e.in.h;
  g.w = e.in.w;
  g.c_in = e.in.c;
  g.c_out = e.out.c;
  g.kh = e.kh;
  g.kw = e.kw;
  g.stride = e.stride;
  return g;
}

void Model::edge_forward(const EdgePlan& e, int n, float* out) {
  const float* src = vbuf_[e.from].act;
  const bool space = e.resizes_space(), chan = e.resizes_channels();
  // conv -> (nearest resize) -> (channel truncate / pad), each step into the next buffer.
  const float* r = src;
  if (e.type == EdgeType::Conv) {
    float* dst = (space || chan) ? scratch_a_ : out;
    ops_.conv2d_forward(ctx_, geometry(e, n), src, param(e.id), dst);
    r = dst;
  }
  if (space) {
    float* dst = chan ? scratch_b_ : out;
    ops_.resize_nearest_forward(ctx_, n, e.out.h, e.out.w, e.out.c, e.reshaped.h, e.reshaped.w, r,
                                dst);
    r = dst;
  }
  if (chan) {
    ops_.channel_resize_forward(ctx_, int64_t(n) * e.reshaped.h * e.reshaped.w, e.out.c,
                                e.reshaped.c, r, out);
    r = out;
  }
  if (r != out) {  // a plain identity edge
    const float* inputs[1] = {r};
    ops_.add_n(ctx_, int64_t(n) * e.out.elements(), inputs, 1, out);
  }
}

void Model::forward(int n, bool train) {
  if (n < 1 || n > max_batch_)
    throw Error("Model::forward: batch of " + std::to_string(n) + " images, capacity " +
                std::to_string(max_batch_));
  if (!weights_) throw Error("Model::forward: no weights bound");
  const int nv = int(plan_.vertices.size());
  for (int v = 1; v < nv; ++v) {
    const VertexPlan& vp = plan_.vertices[v];
    VertexBuffers& b = vbuf_[v];
    const int64_t size = int64_t(n) * vp.shape.elements();
    const EdgePlan& first = plan_.edges[vp.in_edges[0]];
    if (b.sum != vbuf_[first.from].act) edge_forward(first, n, b.sum);
    for (std::size_t i = 1; i < vp.in_edges.size(); ++i) {
      const EdgePlan& e = plan_.edges[vp.in_edges[i]];
      const float* summand = vbuf_[e.from].act;
      if (e.type == EdgeType::Conv || needs_reshape(e)) {
        edge_forward(e, n, scratch_c_);
        summand = scratch_c_;
      }
      const float* inputs[2] = {b.sum, summand};
      ops_.add_n(ctx_, size, inputs, 2, b.sum);
    }
    if (vp.activation == Activation::BnRelu) {
      const float* gamma = param(vp.id + ".gamma");
      const float* beta = param(vp.id + ".beta");
      float* mean = param(vp.id + ".running_mean");
      float* var = param(vp.id + ".running_var");
      const int64_t m = int64_t(n) * vp.shape.h * vp.shape.w;
      if (train)
        ops_.batchnorm_forward_train(ctx_, m, vp.shape.c, b.sum, gamma, beta, true, b.act,
                                     b.save_mean, b.save_invstd, mean, var);
      else
        ops_.batchnorm_forward_infer(ctx_, m, vp.shape.c, b.sum, gamma, beta, mean, var, true,
                                     b.act);
    }
  }
  const VertexPlan& out = plan_.output();
  ops_.global_avg_pool_forward(ctx_, n, out.shape.h * out.shape.w, out.shape.c,
                               vbuf_[nv - 1].act, pooled_);
  ops_.fc_forward(ctx_, n, out.shape.c, plan_.classes, pooled_, param("fc.weight"),
                  param("fc.bias"), logits_);
}

void Model::loss(const int32_t* labels, int n, bool with_gradient, int grad_n) {
  ops_.softmax_cross_entropy(ctx_, n, plan_.classes, logits_, labels, loss_result_,
                             with_gradient ? d_logits_ : nullptr, grad_n > 0 ? grad_n : n);
}

void Model::edge_backward(const EdgePlan& e, int n, float* out) {
  // d: gradient w.r.t. this edge's reshaped result = d_sum of the target vertex.
  const float* d = vbuf_[e.to].d_sum;
  if (e.resizes_channels()) {
    ops_.channel_resize_backward(ctx_, int64_t(n) * e.reshaped.h * e.reshaped.w, e.out.c,
                                 e.reshaped.c, d, scratch_a_);
    d = scratch_a_;
  }
  if (e.resizes_space()) {
    ops_.resize_nearest_backward(ctx_, n, e.out.h, e.out.w, e.out.c, e.reshaped.h, e.reshaped.w,
                                 d, scratch_b_);
    d = scratch_b_;
  }
  const bool source_needs = vbuf_[e.from].needs_grad;
  if (e.type == EdgeType::Conv) {
    const ConvGeometry g = geometry(e, n);
    ops_.conv2d_backward_filter(ctx_, g, vbuf_[e.from].act, d, grad(e.id));
    if (source_needs) ops_.conv2d_backward_data(ctx_, g, d, param(e.id), out);
  } else if (source_needs && out != d) {  // (out == d: the source's d_act is this d_sum)
    const float* inputs[1] = {d};
    ops_.add_n(ctx_, int64_t(n) * e.in.elements(), inputs, 1, out);
  }
}

void Model::backward(int n) {
  const int nv = int(plan_.vertices.size());
  const VertexPlan& out = plan_.output();
  const bool out_needs = vbuf_[nv - 1].needs_grad;
  ops_.fc_backward(ctx_, n, out.shape.c, plan_.classes, pooled_, param("fc.weight"), d_logits_,
                   out_needs ? d_pooled_ : nullptr, grad("fc.weight"), grad("fc.bias"));
  if (!out_needs) return;
  ops_.global_avg_pool_backward(ctx_, n, out.shape.h * out.shape.w, out.shape.c, d_pooled_,
                                vbuf_[nv - 1].d_act);

  // Reverse topological order: every out-edge of a vertex is handled (at its target) before the
  // vertex itself, so each d_act is complete when it is read. The first contribution overwrites
  // d_act, later ones are added to it.
  std::vector<bool> written(nv, false);
  written[nv - 1] = true;
  for (int v = nv - 1; v >= 1; --v) {
    const VertexPlan& vp = plan_.vertices[v];
    VertexBuffers& b = vbuf_[v];
    if (!b.needs_grad) continue;
    if (!written[v]) throw Error("Model::backward: vertex " + vp.id + " received no gradient");
    if (vp.activation == Activation::BnRelu) {
      ops_.batchnorm_backward(ctx_, int64_t(n) * vp.shape.h * vp.shape.w, vp.shape.c, b.sum,
                              b.act, b.d_act, param(vp.id + ".gamma"), b.save_mean, b.save_invstd,
                              true, b.d_sum, grad(vp.id + ".gamma"), grad(vp.id + ".beta"));
    }
    for (int ei : vp.in_edges) {
      const EdgePlan& e = plan_.edges[ei];
      VertexBuffers& src = vbuf_[e.from];
      const bool first = src.needs_grad && !written[e.from];
      edge_backward(e, n, first ? src.d_act : scratch_c_);
      if (src.needs_grad && !first) {
        const float* inputs[2] = {src.d_act, scratch_c_};
        ops_.add_n(ctx_, int64_t(n) * e.in.elements(), inputs, 2, src.d_act);
      }
      if (src.needs_grad) written[e.from] = true;
    }
  }
}

void Model::sgd_step(float lr, float momentum, float weight_decay) {
  for (Param& q : params_) {
    if (!q.grad) continue;
    const bool decay = q.kind == ParamKind::ConvFilter || q.kind == ParamKind::FcWeight;
    ops_.sgd_update(ctx_, q.elements, lr, momentum, decay ? weight_decay : 0.0f, q.value, q.grad,
                    q.velocity);
  }
}

}  // namespace evo
