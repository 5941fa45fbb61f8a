// Weights of a model: initialisation, the paper's inheritance, and moving them to and from the
// weight file (whose format is weight_file.cpp). Not the graph that uses them (model.cpp).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "evo/io.h"
#include "evo/model.h"
#include "evo/weight_file.h"

namespace evo {

namespace {

std::vector<int64_t> dims_of(const Tensor& t) {
  std::vector<int64_t> d;
  for (int i = 0; i < t.shape().rank(); ++i) d.push_back(t.shape()[i]);
  return d;
}

// How many results the vertex that a convolution feeds sums (its in-edges): 1 for the fully
// connected layer and for a vertex with one input.
int64_t summed_inputs(const CompiledDna& plan, const ParamInfo& p) {
  if (p.kind != ParamKind::ConvFilter) return 1;
  const int e = plan.edge_index(p.owner);
  if (e < 0) return 1;
  return std::max<int64_t>(1, int64_t(plan.vertices[std::size_t(plan.edges[std::size_t(e)].to)]
                                          .in_edges.size()));
}

Tensor fresh_tensor(const CompiledDna& plan, const ParamInfo& p, Context& ctx) {
  const Shape shape(p.shape);
  switch (p.kind) {
    case ParamKind::ConvFilter:
    case ParamKind::FcWeight: {
      // fan_in: everything but the output dimension ([C_out, KH, KW, C_in] or [classes, C]).
      // The paper's code draws variance 2 * init_scale^2 / fan_in, init_scale normalising "the
      // initial weights in the case of multiple incoming edges": with init_scale = 1/sqrt(k) for
      // a vertex summing k results, the sum of k independent results has one result's variance.
      // That is He's draw with fan_in * k (data/dna/README.md, "Weight tensors").
      const int64_t fan_in =
          p.elements() / std::max<int64_t>(p.shape[0], 1) * summed_inputs(plan, p);
      Tensor t = Tensor::empty(shape, ctx.device());
      const PhiloxState rng = ctx.rng().take(uint64_t(p.elements() + 1) / 2);
      ops(ctx.device().kind).he_init(ctx, p.elements(), int(fan_in), rng, t.data<float>());
      ctx.synchronize();
      return t;
    }
    case ParamKind::BnGamma:
    case ParamKind::BnRunningVar:
      return Tensor::from_host(std::vector<float>(std::size_t(p.elements()), 1.0f), shape,
                               ctx.device());
    case ParamKind::BnBeta:
    case ParamKind::BnRunningMean:
    case ParamKind::FcBias: return Tensor::zeros(shape, ctx.device());
  }
  throw Error("unknown parameter kind");
}

}  // namespace

const Tensor& Weights::at(const std::string& key) const {
  const auto it = tensors.find(key);
  if (it == tensors.end()) throw Error("no weight tensor '" + key + "'");
  return it->second;
}

Weights Weights::to(Device device) const {
  Weights w;
  for (const auto& [key, t] : tensors) w.tensors[key] = t.to(device);
  return w;
}

Weights init_weights(const CompiledDna& plan, Context& ctx) {
  Weights w;
  for (const ParamInfo& p : plan.params) w.tensors[p.key] = fresh_tensor(plan, p, ctx);
  return w;
}

namespace {

// The overlap of a parent tensor and the child's tensor of the same key but another shape, for
// --inheritance keep (weights.h explains the rule). `fresh` is the child's freshly initialised
// tensor on the host; the result starts as a copy of it and takes the parent's values wherever
// the parent had them. Each dimension is matched from its start (channels: the old ones are the
// first ones, as compile() numbers them), except a filter's height and width, matched at their
// centre (a 3x3 filter is the middle of the 5x5 one: 'same' padding keeps it where it was).
std::vector<float> keep_overlap(const ParamInfo& p, const std::vector<int64_t>& pshape,
                                const std::vector<float>& parent, std::vector<float> fresh) {
  switch (p.kind) {
    case ParamKind::ConvFilter: {  // [C_out, KH, KW, C_in]
      const int64_t co = p.shape[0], kh = p.shape[1], kw = p.shape[2], ci = p.shape[3];
      const int64_t pco = pshape[0], pkh = pshape[1], pkw = pshape[2], pci = pshape[3];
      const int64_t dy = (kh - pkh) / 2, dx = (kw - pkw) / 2;  // both odd: exact halves
      for (int64_t o = 0; o < std::min(co, pco); ++o)  // an old output channel...
        for (int64_t y = 0; y < kh; ++y)
          for (int64_t x = 0; x < kw; ++x)
            for (int64_t i = 0; i < ci; ++i) {
              const int64_t py = y - dy, px = x - dx;
              const bool had = i < pci && py >= 0 && py < pkh && px >= 0 && px < pkw;
              // ...keeps what it had and ignores new inputs and new taps (0): its function is
              // unchanged. New output channels (o >= pco) keep their fresh draw, so they compute
              // something and learn; what reads them starts with 0 weights on them.
              fresh[std::size_t(((o * kh + y) * kw + x) * ci + i)] =
                  had ? parent[std::size_t(((o * pkh + py) * pkw + px) * pci + i)] : 0.0f;
            }
      return fresh;
    }
    case ParamKind::FcWeight: {  // [classes, C]: a new input column starts at 0
      const int64_t k = p.shape[0], c = p.shape[1], pc = pshape[1];
      for (int64_t r = 0; r < std::min(k, pshape[0]); ++r)
        for (int64_t j = 0; j < c; ++j)
          fresh[std::size_t(r * c + j)] = j < pc ? parent[std::size_t(r * pc + j)] : 0.0f;
      return fresh;
    }
    default:  // per-channel vectors: old channels keep theirs, new ones the fresh values
      for (int64_t j = 0; j < std::min(p.shape[0], pshape[0]); ++j)
        fresh[std::size_t(j)] = parent[std::size_t(j)];
      return fresh;
  }
}

// Whether a tensor reads the same vertex in parent and child: the overlap means something only
// then. A convolution whose source changed (REMOVE-CONVOLUTION joins the removed layer's input to
// its successor) sees other features, perhaps of another scale (the raw image instead of a
// normalised layer), and keeping its weights there made children diverge to NaN in trials.
bool same_input(const CompiledDna& parent, const CompiledDna& child, const ParamInfo& p) {
  const auto source = [](const CompiledDna& plan, const ParamInfo& q) -> std::string {
    if (q.kind == ParamKind::FcWeight) return plan.output().id;
    if (q.kind != ParamKind::ConvFilter) return q.owner;  // batch norm: its own vertex
    const int e = plan.edge_index(q.owner);
    return e < 0 ? "" : plan.vertices[std::size_t(plan.edges[std::size_t(e)].from)].id;
  };
  const ParamInfo* q = parent.find_param(p.key);
  return q && source(parent, *q) == source(child, p);
}

// A convolution the parent did not have (INSERT-CONVOLUTION: depth factor 1, so C_out == C_in)
// starts as the identity: 1 at the centre tap from input channel o to output channel o, 0
// elsewhere. Its vertex's batch norm and ReLU still act, so the child starts near, not at, its
// parent's function. Another shape keeps its fresh draw.
std::vector<float> identity_filter(const ParamInfo& p, std::vector<float> fresh) {
  const int64_t co = p.shape[0], kh = p.shape[1], kw = p.shape[2], ci = p.shape[3];
  if (co != ci) return fresh;
  std::fill(fresh.begin(), fresh.end(), 0.0f);
  for (int64_t o = 0; o < co; ++o) fresh[std::size_t(((o * kh + kh / 2) * kw + kw / 2) * ci + o)] = 1;
  return fresh;
}

}  // namespace

const char* to_string(Inheritance h) { return h == Inheritance::Keep ? "keep" : "paper"; }

Inheritance parse_inheritance(const std::string& name) {
  if (name == "paper") return Inheritance::Paper;
  if (name == "keep") return Inheritance::Keep;
  throw UsageError("unknown inheritance '" + name + "': use paper or keep");
}

Weights inherit_weights(const CompiledDna& parent, const Weights& parent_weights,
                        const CompiledDna& child, Context& ctx, Inheritance how, int* kept) {
  Weights w;
  int n_kept = 0;
  for (const ParamInfo& p : child.params) {
    const ParamInfo* q = parent.find_param(p.key);
    const auto it = parent_weights.tensors.find(p.key);
    const bool have = q && it != parent_weights.tensors.end();
    if (have && q->shape == p.shape) {
      Tensor t = Tensor::empty(Shape(p.shape), ctx.device());
      t.copy_from(it->second.reshape(Shape(p.shape)));
      w.tensors[p.key] = t;
      ++n_kept;
      continue;
    }
    // Every fresh draw happens in both modes, in the same order, so the random stream (and every
    // later draw) is the same whichever rule a run uses.
    Tensor fresh = fresh_tensor(child, p, ctx);
    if (how == Inheritance::Keep && have && q->shape.size() == p.shape.size() &&
        same_input(parent, child, p)) {
      w.tensors[p.key] = Tensor::from_host(
          keep_overlap(p, q->shape, it->second.to_host(), fresh.to_host()), Shape(p.shape),
          ctx.device());
    } else if (how == Inheritance::Keep && !q && p.kind == ParamKind::ConvFilter) {
      w.tensors[p.key] =
          Tensor::from_host(identity_filter(p, fresh.to_host()), Shape(p.shape), ctx.device());
    } else {
      w.tensors[p.key] = std::move(fresh);
    }
  }
  if (kept) *kept = n_kept;
  return w;
}

void save_weights(const Weights& weights, const std::string& path) {
  HostWeights host;
  for (const auto& [key, t] : weights.tensors) host[key] = {dims_of(t), t.to_host()};
  // Readers see all or nothing, and a link planted at the temporary name is never followed.
  try {
    write_file_atomic(path, encode_weight_file(host), "weight file");
  } catch (const WeightsError&) {
    throw;
  } catch (const Error& e) {
    throw WeightsError(e.what());
  }
}

Weights load_weights(const std::string& path, const CompiledDna& plan, Device device) {
  const HostWeights host = read_weight_file(path, plan);
  Weights w;
  for (const ParamInfo& p : plan.params)
    w.tensors[p.key] = Tensor::from_host(host.at(p.key).values, Shape(p.shape), device);
  return w;
}

}  // namespace evo
