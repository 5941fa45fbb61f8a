// Compiles a DNA for an input shape (order, shapes by the paper's mismatch rule, weight tensors,
// params, FLOPs, budgets) and renders `evo show` text and Graphviz. Not the model: no tensors.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "evo/dna.h"

namespace evo {

std::string ActShape::str() const {
  return std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c);
}

const char* to_string(ParamKind k) {
  switch (k) {
    case ParamKind::ConvFilter:
      return "conv_filter";
    case ParamKind::BnGamma:
      return "bn_gamma";
    case ParamKind::BnBeta:
      return "bn_beta";
    case ParamKind::BnRunningMean:
      return "bn_running_mean";
    case ParamKind::BnRunningVar:
      return "bn_running_var";
    case ParamKind::FcWeight:
      return "fc_weight";
    case ParamKind::FcBias:
      return "fc_bias";
  }
  return "?";
}

int64_t ParamInfo::elements() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

int CompiledDna::vertex_index(const std::string& id) const {
  for (std::size_t i = 0; i < vertices.size(); ++i)
    if (vertices[i].id == id) return int(i);
  return -1;
}

int CompiledDna::edge_index(const std::string& id) const {
  for (std::size_t i = 0; i < edges.size(); ++i)
    if (edges[i].id == id) return int(i);
  return -1;
}

const ParamInfo* CompiledDna::find_param(const std::string& key) const {
  for (const ParamInfo& p : params)
    if (p.key == key) return &p;
  return nullptr;
}

namespace {

// 1234567 -> "1,234,567": counts that people compare by eye.
std::string grouped(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

std::string human(double x, const char* unit) {
  const char* prefixes[] = {"", " K", " M", " G", " T", " P"};  // "20 FLOPs", "29.4 MFLOPs"
  int p = 0;
  while (std::fabs(x) >= 1000 && p < 5) x /= 1000, ++p;
  char buf[48];
  std::snprintf(buf, sizeof buf, p ? "%.3g%s%s" : "%.0f %s%s", x, prefixes[p], unit);
  return buf;
}

std::string edge_field(const Dna& d, const std::string& id) {
  for (std::size_t i = 0; i < d.edges.size(); ++i)
    if (d.edges[i].id == id)
      return "edges[" + std::to_string(i) + "] (id " + nlohmann::json(id).dump() + ")";
  return id;
}

}  // namespace

CompiledDna compile(const Dna& dna, int height, int width, int channels, int classes,
                    Budget budget) {
  validate(dna);
  const std::string& src = dna.source;
  constexpr int kMaxSide = 1 << 16;
  if (height < 1 || width < 1 || height > kMaxSide || width > kMaxSide)
    throw DnaError(src, "",
                   "cannot compile for a " + std::to_string(height) + "x" + std::to_string(width) +
                       " image; sides must be 1 to " + std::to_string(kMaxSide));
  if (channels < 1 || channels > kMaxChannels)
    throw DnaError(src, "",
                   "cannot compile for " + std::to_string(channels) +
                       " input channels; the range is 1 to " + std::to_string(kMaxChannels));
  if (classes < 1)
    throw DnaError(src, "",
                   "cannot compile for " + std::to_string(classes) +
                       " classes; a classifier needs at least one");

  CompiledDna plan;
  plan.dna = dna;
  plan.input = {height, width, channels};
  plan.classes = classes;

  // Topological order = the backbone path (validate() guarantees it covers every vertex and that
  // skips go forward along it).
  // Every lookup by id goes through a map: linear in the DNA's size up to kMaxVertices.
  std::map<std::string, const Edge*> backbone_out, backbone_in;
  std::map<std::string, std::vector<const Edge*>> skips_in;  // in file order, as before
  for (const Edge& e : dna.edges) {
    if (!e.skip) backbone_out[e.from] = backbone_in[e.to] = &e;
    if (e.skip) skips_in[e.to].push_back(&e);
  }
  std::map<std::string, Activation> activation;
  for (const Vertex& v : dna.vertices) activation[v.id] = v.activation;
  std::map<std::string, int> index;
  for (std::string at = dna.input;; at = backbone_out.at(at)->to) {
    index[at] = int(plan.vertices.size());
    plan.vertices.push_back({at, activation.at(at), {}, {}});
    if (at == dna.output) break;
  }
  plan.vertices[0].shape = plan.input;

  auto add_param = [&](std::string key, std::vector<int64_t> shape, ParamKind kind,
                       const std::string& owner) {
    plan.params.push_back({std::move(key), std::move(shape), kind, owner});
  };

  int64_t activation_floats = plan.input.elements();
  for (std::size_t vi = 1; vi < plan.vertices.size(); ++vi) {
    VertexPlan& v = plan.vertices[vi];
    // The backbone (primary) edge fixes the vertex's shape; the skips are reshaped to it.
    std::vector<const Edge*> in_edges{backbone_in.at(v.id)};
    if (const auto it = skips_in.find(v.id); it != skips_in.end())
      in_edges.insert(in_edges.end(), it->second.begin(), it->second.end());
    for (const Edge* e : in_edges) {
      EdgePlan ep;
      ep.id = e->id;
      ep.type = e->type;
      ep.skip = e->skip;
      ep.from = index.at(e->from);
      ep.to = int(vi);
      ep.in = plan.vertices[ep.from].shape;
      ep.out = ep.in;
      if (e->type == EdgeType::Conv) {
        ep.kh = e->filter_h;
        ep.kw = e->filter_w;
        ep.stride = e->stride();
        // 'same' padding: ceil(in / stride), as ConvGeometry::out_h() in ops.h.
        ep.out.h = (ep.in.h - 1) / ep.stride + 1;
        ep.out.w = (ep.in.w - 1) / ep.stride + 1;
        const double wanted = std::llround(double(ep.in.c) * e->depth_factor);
        if (wanted > kMaxChannels)
          throw DnaError(src, edge_field(dna, e->id) + ".depth_factor",
                         nlohmann::json(e->depth_factor).dump() + " x " + std::to_string(ep.in.c) +
                             " input channels gives " + grouped(int64_t(wanted)) +
                             " channels for a " + plan.input.str() + " input; the most is " +
                             std::to_string(kMaxChannels));
        ep.out.c = std::max(1, int(wanted));
        ep.params = int64_t(ep.out.c) * ep.kh * ep.kw * ep.in.c;
        ep.flops = 2.0 * double(ep.out.h) * ep.out.w * ep.out.c * ep.kh * ep.kw * ep.in.c;
        add_param(e->id, {ep.out.c, ep.kh, ep.kw, ep.in.c}, ParamKind::ConvFilter, e->id);
        activation_floats += ep.out.elements();
      }
      if (!e->skip) v.shape = ep.out;
      ep.reshaped = v.shape;
      if (ep.skip && (ep.resizes_space() || ep.resizes_channels()))
        activation_floats += ep.reshaped.elements();
      v.in_edges.push_back(int(plan.edges.size()));
      plan.edges.push_back(ep);
    }
    activation_floats += v.shape.elements();
    if (v.activation == Activation::BnRelu) {
      const int64_t c = v.shape.c;
      add_param(v.id + ".gamma", {c}, ParamKind::BnGamma, v.id);
      add_param(v.id + ".beta", {c}, ParamKind::BnBeta, v.id);
      add_param(v.id + ".running_mean", {c}, ParamKind::BnRunningMean, v.id);
      add_param(v.id + ".running_var", {c}, ParamKind::BnRunningVar, v.id);
      activation_floats += v.shape.elements();  // pre-activation, kept for the backward pass
    }
  }

  const int64_t features = plan.output().shape.c;
  add_param("fc.weight", {classes, features}, ParamKind::FcWeight, "fc");
  add_param("fc.bias", {classes}, ParamKind::FcBias, "fc");
  activation_floats += features + classes;  // pooled features and logits

  for (const ParamInfo& p : plan.params)
    (p.trainable() ? plan.param_count : plan.state_count) += p.elements();
  for (const EdgePlan& e : plan.edges) plan.forward_flops += e.flops;
  plan.forward_flops += 2.0 * double(features) * classes;
  plan.train_flops = kTrainFlopsPerForward * plan.forward_flops;
  plan.activation_bytes = activation_floats * int64_t(sizeof(float));

  const std::string on = " on a " + plan.input.str() + " input";
  if (budget.max_params > 0 && plan.param_count > budget.max_params)
    throw DnaError(src, "",
                   "the model has " + grouped(plan.param_count) + " trainable parameters" + on +
                       ", above the budget of " + grouped(budget.max_params) + " (max_params)");
  if (budget.max_flops_per_image > 0 && plan.forward_flops > budget.max_flops_per_image)
    throw DnaError(src, "",
                   "the model needs " + human(plan.forward_flops, "FLOPs") + " per image forward" +
                       on + ", above the budget of " + human(budget.max_flops_per_image, "FLOPs") +
                       " (max_flops_per_image)");
  if (budget.max_activation_bytes > 0 && plan.activation_bytes > budget.max_activation_bytes)
    throw DnaError(src, "",
                   "a training step keeps " + human(double(plan.activation_bytes), "B") +
                       " of activations per image" + on + ", above the budget of " +
                       human(double(budget.max_activation_bytes), "B") + " (max_activation_bytes)");
  return plan;
}

// ---- views
// ---------------------------------------------------------------------------------------

namespace {

std::string conv_text(const Edge& de, const EdgePlan& e) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "conv %dx%d stride %d depth x%s", e.kh, e.kw, e.stride,
                nlohmann::json(de.depth_factor).dump().c_str());
  return buf;
}

std::string skip_text(const EdgePlan& e) {
  std::string s = "skip";
  if (e.resizes_space())
    s += ", nearest " + std::to_string(e.out.h) + "x" + std::to_string(e.out.w) + "->" +
         std::to_string(e.reshaped.h) + "x" + std::to_string(e.reshaped.w);
  if (e.resizes_channels())
    s += std::string(e.out.c > e.reshaped.c ? ", truncate " : ", zero-pad ") +
         std::to_string(e.out.c) + "->" + std::to_string(e.reshaped.c);
  return s;
}

}  // namespace

std::string describe(const CompiledDna& plan) {
  const Dna& dna = plan.dna;
  int convs = 0, skips = 0;
  for (const EdgePlan& e : plan.edges) convs += e.type == EdgeType::Conv, skips += e.skip;
  std::ostringstream o;
  o << "DNA " << dna.source << " (" << kDnaFormat << "): " << plan.vertices.size()
    << (plan.vertices.size() == 1 ? " vertex, " : " vertices, ") << convs
    << (convs == 1 ? " convolution, " : " convolutions, ") << skips
    << (skips == 1 ? " skip" : " skips") << ", learning rate "
    << nlohmann::json(dna.learning_rate).dump() << "\n";
  o << "compiled for " << plan.input.str() << " images, " << plan.classes << " classes\n\n";

  char line[512];
  auto row = [&](const std::string& id, const std::string& link, const std::string& op,
                 const std::string& in, const std::string& out, const std::string& params,
                 const std::string& flops) {
    std::snprintf(line, sizeof line, "  %-8s %-14s %-44s %-12s %-12s %11s %14s", id.c_str(),
                  link.c_str(), op.c_str(), in.c_str(), out.c_str(), params.c_str(), flops.c_str());
    std::string text = line;
    text.erase(text.find_last_not_of(' ') + 1);
    o << text << "\n";
  };
  row("id", "from -> to", "operation", "in", "out", "params", "FLOPs");
  std::map<std::string, const Edge*> edge_by_id;  // one lookup per edge, not a walk
  for (const Edge& e : dna.edges) edge_by_id[e.id] = &e;
  for (std::size_t vi = 0; vi < plan.vertices.size(); ++vi) {
    const VertexPlan& v = plan.vertices[vi];
    for (int ei : v.in_edges) {
      const EdgePlan& e = plan.edges[ei];
      const std::string link = plan.vertices[e.from].id + " -> " + v.id;
      const std::string op = e.type == EdgeType::Conv ? conv_text(*edge_by_id.at(e.id), e)
                             : e.skip                 ? skip_text(e)
                                                      : "identity";
      row(e.id, link, op, e.in.str(), e.reshaped.str(), e.params ? grouped(e.params) : "",
          e.flops ? grouped(int64_t(e.flops)) : "");
    }
    std::string op = vi == 0 ? "input image" : v.in_edges.size() > 1 ? "sum" : "";
    if (v.activation == Activation::BnRelu)
      op += op.empty() ? "batch norm + ReLU" : ", batch norm + ReLU";
    if (op.empty()) op = "linear";
    const int64_t bn = v.activation == Activation::BnRelu ? 2 * int64_t(v.shape.c) : 0;
    row(v.id, vi + 1 == plan.vertices.size() ? "(output)" : "", op, "", v.shape.str(),
        bn ? grouped(bn) : "", "");
  }
  const int features = plan.output().shape.c;
  row("pool", plan.output().id + " -> fc", "global average pool", plan.output().shape.str(),
      std::to_string(features), "", "");
  row("fc", "", "fully connected + softmax", std::to_string(features), std::to_string(plan.classes),
      grouped(int64_t(features + 1) * plan.classes),
      grouped(int64_t(2.0 * features * plan.classes)));

  o << "\n  parameters     " << grouped(plan.param_count) << " trainable";
  if (plan.state_count)
    o << " (+ " << grouped(plan.state_count) << " batch-norm running statistics)";
  o << "\n  FLOPs / image  forward " << human(plan.forward_flops, "FLOPs") << ", training step "
    << human(plan.train_flops, "FLOPs") << " (3 x forward; multiply-adds count 2)\n";
  o << "  activations    " << human(double(plan.activation_bytes), "B")
    << " per image in a training step (float32)\n";
  return o.str();
}

std::string to_dot(const CompiledDna& plan) {
  const Dna& dna = plan.dna;
  auto q = [](const std::string& s) { return nlohmann::json(s).dump(); };
  std::ostringstream o;
  o << "// " << dna.source << " compiled for " << plan.input.str() << " images, " << plan.classes
    << " classes. Render: dot -Tsvg FILE.dot -o FILE.svg\n";
  o << "digraph dna {\n  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n"
    << "  edge [fontname=\"Helvetica\", fontsize=10];\n";
  for (std::size_t vi = 0; vi < plan.vertices.size(); ++vi) {
    const VertexPlan& v = plan.vertices[vi];
    const std::string what = vi == 0 ? "input" : to_string(v.activation);
    o << "  " << q(v.id) << " [label=" << q(v.id + " " + what + "\n" + v.shape.str()) << "];\n";
  }
  for (const EdgePlan& e : plan.edges) {
    std::string label = e.id;
    if (e.type == EdgeType::Conv) {
      label += "\nconv " + std::to_string(e.kh) + "x" + std::to_string(e.kw);
      if (e.stride > 1) label += " /" + std::to_string(e.stride);
      label += " -> " + std::to_string(e.out.c) + " ch";
    } else if (e.skip && (e.resizes_space() || e.resizes_channels())) {
      label += "\nreshaped " + e.out.str() + "->" + e.reshaped.str();
    }
    o << "  " << q(plan.vertices[e.from].id) << " -> " << q(plan.vertices[e.to].id)
      << " [label=" << q(label) << (e.skip ? ", style=dashed" : "") << "];\n";
  }
  // "fc" cannot clash with a vertex: validate() reserves it.
  o << "  \"fc\" [shape=ellipse, label="
    << q("global pool + fully connected\n" + std::to_string(plan.output().shape.c) + " -> " +
         std::to_string(plan.classes) + " classes")
    << "];\n";
  o << "  " << q(plan.output().id) << " -> \"fc\";\n}\n";
  return o.str();
}

}  // namespace evo
