// The paper's eleven mutations on a Dna, and the uniform choice among them. Not selection, training
// or weight inheritance (ids and shapes carry weights over), and not `evo mutate`'s printing.
#include "evo/mutation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <utility>

namespace evo {

namespace {

// ---- portable randomness ----------------------------------------------------------------------
// The <random> distributions differ between standard libraries; these use only the engine's
// output, which the standard fixes, so a seed names the same child everywhere.

// Uniform in [0, n), n >= 1, without modulo bias.
std::size_t pick(std::size_t n, std::mt19937_64& rng) {
  const uint64_t range = n;
  const uint64_t reject_below = (0 - range) % range;  // 2^64 mod n
  for (;;) {
    const uint64_t r = rng();
    if (r >= reject_below) return std::size_t(r % range);
  }
}

double uniform01(std::mt19937_64& rng) {  // [0, 1), 53 random bits
  return double(rng() >> 11) * 0x1.0p-53;
}

double uniform(double lo, double hi, std::mt19937_64& rng) {
  return lo + (hi - lo) * uniform01(rng);
}

bool coin(std::mt19937_64& rng) {
  return (rng() >> 63) != 0;
}

template <typename T>
const T& pick_from(const std::vector<T>& items, std::mt19937_64& rng) {
  return items[pick(items.size(), rng)];
}

std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", x);
  return buf;
}

// ---- the backbone -----------------------------------------------------------------------------

// The backbone of a valid DNA: its vertices in order and each vertex's backbone edges.
struct Backbone {
  std::vector<std::string> order;          // input first, output last
  std::map<std::string, int> position;     // vertex id -> index in order
  std::map<std::string, std::size_t> in;   // vertex id -> index of its backbone in-edge
  std::map<std::string, std::size_t> out;  // vertex id -> index of its backbone out-edge
};

Backbone backbone_of(const Dna& d) {
  Backbone b;
  for (std::size_t i = 0; i < d.edges.size(); ++i) {
    if (d.edges[i].skip) continue;
    b.in[d.edges[i].to] = i;
    b.out[d.edges[i].from] = i;
  }
  std::string at = d.input;
  for (;;) {
    b.position[at] = int(b.order.size());
    b.order.push_back(at);
    const auto next = b.out.find(at);
    if (at == d.output || next == b.out.end()) break;
    at = d.edges[next->second].to;
  }
  return b;
}

std::size_t vertex_index(const Dna& d, const std::string& id) {
  for (std::size_t i = 0; i < d.vertices.size(); ++i)
    if (d.vertices[i].id == id) return i;
  throw Error("mutation: internal error: no vertex " + id);
}

std::vector<std::size_t> conv_edges(const Dna& d) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < d.edges.size(); ++i)
    if (d.edges[i].type == EdgeType::Conv) out.push_back(i);
  return out;
}

std::vector<std::size_t> skip_edges(const Dna& d) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < d.edges.size(); ++i)
    if (d.edges[i].skip) out.push_back(i);
  return out;
}

// How a hypothetical change alters one backbone edge when counting channels.
struct ChannelOverride {
  std::size_t edge = SIZE_MAX;  // none when SIZE_MAX
  bool as_identity = false;     // the conv is removed (its source's channels flow on)
  double depth_factor = 1.0;    // otherwise: the conv's new factor
};

// Whether every vertex stays within kMaxChannels for an input of `input_channels`, by compile()'s
// rule: out = max(1, llround(in x factor)), refused when llround(...) > kMaxChannels. Only the
// backbone decides channels (skips are truncated or padded to it), so this walks the backbone.
bool channels_fit(const Dna& d, const Backbone& b, int input_channels, ChannelOverride o = {}) {
  double c = input_channels;
  for (std::size_t k = 1; k < b.order.size(); ++k) {
    const std::size_t i = b.in.at(b.order[k]);
    const Edge& e = d.edges[i];
    if (e.type != EdgeType::Conv || (i == o.edge && o.as_identity)) continue;
    const double f = i == o.edge ? o.depth_factor : e.depth_factor;
    const double wanted = double(std::llround(c * f));
    if (wanted > kMaxChannels) return false;
    c = std::max(1.0, wanted);
  }
  return true;
}

// ---- the mutations ----------------------------------------------------------------------------

MutationResult result(const Dna& parent, Mutation m) {
  MutationResult r;
  r.child = parent;
  r.mutation = m;
  return r;
}

MutationResult alter_learning_rate(const Dna& parent, std::mt19937_64& rng) {
  MutationResult r = result(parent, Mutation::AlterLearningRate);
  // Log-uniform in [1/2, 2]: halving and doubling are equally likely, so the rate does a random
  // walk in log space instead of drifting up as a linear draw (mean 1.25) would make it.
  const double factor = std::exp2(uniform(-1.0, 1.0, rng));
  r.child.learning_rate = parent.learning_rate * factor;
  if (!std::isfinite(r.child.learning_rate) || r.child.learning_rate <= 0)
    throw MutationNotApplicable("alter-learning-rate: the learning rate " +
                                num(parent.learning_rate) + " cannot be scaled further");
  r.detail = "learning rate " + num(parent.learning_rate) + " -> " + num(r.child.learning_rate) +
             " (x" + num(factor) + ")";
  return r;
}

// INSERT-CONVOLUTION (conv = true) and INSERT-ONE-TO-ONE: new vertex w after backbone vertex u.
MutationResult insert_vertex(const Dna& parent, bool conv, std::mt19937_64& rng) {
  MutationResult r = result(parent, conv ? Mutation::InsertConvolution : Mutation::InsertOneToOne);
  Dna& d = r.child;
  const Backbone b = backbone_of(parent);
  const std::string u = pick_from(b.order, rng);

  Vertex w{d.mint_id("v"), coin(rng) ? Activation::BnRelu : Activation::Linear};
  Edge e;
  e.id = d.mint_id("e");
  e.from = u;
  e.to = w.id;
  e.skip = false;
  if (conv) {
    e.type = EdgeType::Conv;
    e.depth_factor = 1.0;  // same channels as u: every later tensor keeps its shape
    e.filter_h = e.filter_w = 3;
    e.stride_scale = coin(rng) ? 1 : 0;
  }

  // Keep the lists in backbone order where they were, so a mutated file still reads top down.
  d.vertices.insert(d.vertices.begin() + std::ptrdiff_t(vertex_index(d, u)) + 1, w);
  std::string rewired;
  std::size_t at = 0;
  if (const auto next = b.out.find(u); next != b.out.end()) {
    // u's old backbone out-edge keeps its id (and so its weights): its input, w, has u's
    // channels.
    d.edges[next->second].from = w.id;
    rewired = d.edges[next->second].id;
    at = next->second;
  } else if (const auto prev = b.in.find(u); prev != b.in.end()) {
    at = prev->second + 1;
  }
  d.edges.insert(d.edges.begin() + std::ptrdiff_t(at), e);
  if (u == parent.output) d.output = w.id;

  r.detail =
      std::string("insert ") +
      (conv ? "conv " + e.id + " 3x3 stride " + std::to_string(e.stride()) : "identity " + e.id) +
      " after " + u + ": new vertex " + w.id + " (" + to_string(w.activation) + ")";
  if (!rewired.empty()) r.detail += "; " + rewired + " now starts at " + w.id;
  if (u == parent.output) r.detail += "; " + w.id + " is the new output";
  return r;
}

// The convs REMOVE-CONVOLUTION may remove: those whose removal keeps channels within the limit
// (removing a factor below 1 multiplies every later channel count).
std::vector<std::size_t> removable_convs(const Dna& d, const Backbone& b, int input_channels) {
  std::vector<std::size_t> out;
  for (std::size_t i : conv_edges(d))
    if (channels_fit(d, b, input_channels, {i, true, 1.0})) out.push_back(i);
  return out;
}

MutationResult remove_convolution(const Dna& parent, std::mt19937_64& rng, int input_channels) {
  const Backbone b = backbone_of(parent);
  const std::vector<std::size_t> candidates = removable_convs(parent, b, input_channels);
  if (candidates.empty())
    throw MutationNotApplicable(conv_edges(parent).empty()
                                    ? "remove-convolution: the DNA has no convolution"
                                    : "remove-convolution: removing any convolution would push "
                                      "a vertex above " +
                                          std::to_string(kMaxChannels) + " channels");
  MutationResult r = result(parent, Mutation::RemoveConvolution);
  const Edge removed = parent.edges[pick_from(candidates, rng)];
  const std::string u = removed.from, v = removed.to;
  // Skips into v carry their value on to where v's value went: v's successor, or u when v was
  // the output (u takes its place).
  const auto next = b.out.find(v);
  const std::string into_v = next != b.out.end() ? parent.edges[next->second].to : u;
  r.detail = "remove conv " + removed.id + " (" + u + " -> " + v + ") and vertex " + v;

  // No two edges may join the same pair (no skip beside a backbone edge, one skip per pair) and
  // no edge may join a vertex to itself. The child's backbone pairs come first; then untouched
  // skips keep their pair unless the new backbone edge u -> (v's successor) now joins it; then
  // rewired skips take their new pair if it is still free. Whatever is refused is dropped.
  std::set<std::pair<std::string, std::string>> pairs;
  for (const Edge& e : parent.edges)
    if (!e.skip && e.id != removed.id) pairs.emplace(e.from == v ? u : e.from, e.to);
  std::map<std::string, std::string> drop;  // skip id -> why
  for (const Edge& e : parent.edges)
    if (e.skip && e.from != v && e.to != v && !pairs.emplace(e.from, e.to).second)
      drop[e.id] = e.from + " -> " + e.to + " is now a backbone edge";
  std::vector<Edge> edges;
  for (const Edge& e : parent.edges) {
    if (e.id == removed.id) continue;
    Edge n = e;
    if (!e.skip) {
      if (e.from == v) {
        n.from = u;
        r.detail += "; " + e.id + " now starts at " + u;
      }
    } else if (e.from == v || e.to == v) {
      if (e.from == v) n.from = u;
      if (e.to == v) n.to = into_v;
      if (n.from == n.to) {
        r.detail += "; skip " + e.id + " dropped (it would join " + n.from + " to itself)";
        continue;
      }
      if (!pairs.emplace(n.from, n.to).second) {
        r.detail += "; skip " + e.id + " dropped (" + n.from + " -> " + n.to + " has an edge)";
        continue;
      }
      r.detail += "; skip " + e.id + " now " + n.from + " -> " + n.to;
    } else if (const auto it = drop.find(e.id); it != drop.end()) {
      r.detail += "; skip " + e.id + " dropped (" + it->second + ")";
      continue;
    }
    edges.push_back(std::move(n));
  }
  r.child.edges = std::move(edges);
  r.child.vertices.erase(r.child.vertices.begin() + std::ptrdiff_t(vertex_index(parent, v)));
  if (v == parent.output) {
    r.child.output = u;
    r.detail += "; " + u + " is the new output";
  }
  return r;
}

MutationResult alter_stride(const Dna& parent, std::mt19937_64& rng) {
  const std::vector<std::size_t> convs = conv_edges(parent);
  if (convs.empty()) throw MutationNotApplicable("alter-stride: the DNA has no convolution");
  MutationResult r = result(parent, Mutation::AlterStride);
  Edge& e = r.child.edges[pick_from(convs, rng)];
  // Powers of two within [half, twice]: the neighbouring scales, those within the limits.
  std::vector<int> scales;
  if (e.stride_scale > 0) scales.push_back(e.stride_scale - 1);
  if (e.stride_scale < kMaxStrideScale) scales.push_back(e.stride_scale + 1);
  const int old = e.stride();
  e.stride_scale = pick_from(scales, rng);
  r.detail =
      "stride of conv " + e.id + ": " + std::to_string(old) + " -> " + std::to_string(e.stride());
  return r;
}

// The range ALTER-NUMBER-OF-CHANNELS draws conv `i`'s new depth factor from: [old/2, 2 old], cut
// to kMaxDepthFactor, to what keeps every vertex within kMaxChannels, and from below at
// kMinFactor. Empty (lo > hi) when nothing fits.
struct FactorRange {
  double lo = 1, hi = 0;
  bool empty() const { return !(lo <= hi); }
};

// Below this every input of up to kMaxChannels channels gives 1 output channel (llround(4096 x
// 1/8192) = 1), so smaller factors change nothing; the floor stops halvings from ever reaching
// an invalid 0.
constexpr double kMinFactor = 0.5 / kMaxChannels;

FactorRange factor_range(const Dna& d, const Backbone& b, std::size_t i, int input_channels) {
  const double f = d.edges[i].depth_factor;
  FactorRange r;
  r.lo = std::min(f, std::max(f / 2, kMinFactor));
  r.hi = std::min(2 * f, kMaxDepthFactor);
  auto fits = [&](double x) { return channels_fit(d, b, input_channels, {i, false, x}); };
  if (fits(r.hi)) return r;
  if (!fits(r.lo)) return {1, 0};
  // Channels grow monotonically with the factor: bisect for the largest factor that fits.
  double good = r.lo, bad = r.hi;
  for (int k = 0; k < 64 && good < bad; ++k) {
    const double mid = good + (bad - good) / 2;
    if (mid <= good || mid >= bad) break;
    (fits(mid) ? good : bad) = mid;
  }
  r.hi = good;
  if (r.hi == r.lo && r.lo == f) return {1, 0};  // the factor cannot move at all
  return r;
}

std::vector<std::size_t> alterable_convs(const Dna& d, const Backbone& b, int input_channels) {
  std::vector<std::size_t> out;
  for (std::size_t i : conv_edges(d))
    if (!factor_range(d, b, i, input_channels).empty()) out.push_back(i);
  return out;
}

MutationResult alter_number_of_channels(const Dna& parent, std::mt19937_64& rng,
                                        int input_channels) {
  const Backbone b = backbone_of(parent);
  const std::vector<std::size_t> candidates = alterable_convs(parent, b, input_channels);
  if (candidates.empty())
    throw MutationNotApplicable(
        conv_edges(parent).empty()
            ? "alter-number-of-channels: the DNA has no convolution"
            : "alter-number-of-channels: no convolution's depth factor can change without "
              "pushing a vertex above " +
                  std::to_string(kMaxChannels) + " channels");
  MutationResult r = result(parent, Mutation::AlterNumberOfChannels);
  const std::size_t i = pick_from(candidates, rng);
  const FactorRange range = factor_range(parent, b, i, input_channels);
  Edge& e = r.child.edges[i];
  const double old = e.depth_factor;
  // The paper's "uniform between half and twice": every value in the range possible.
  e.depth_factor = std::clamp(uniform(range.lo, range.hi, rng), range.lo, range.hi);
  r.detail = "depth factor of conv " + e.id + ": " + num(old) + " -> " + num(e.depth_factor);
  if (range.hi < std::min(2 * old, kMaxDepthFactor))
    r.detail += " (range cut at " + num(range.hi) + " to stay within " +
                std::to_string(kMaxChannels) + " channels)";
  return r;
}

// An odd filter size near `old`: the odd values in [old/2, 2 old] other than old, plus old +- 2
// so that 1 can grow (1 -> 3) and 3 can shrink (3 -> 1), all within [1, kMaxFilterSize].
std::vector<int> filter_sizes_near(int old) {
  std::vector<int> out;
  for (int k = 1; k <= kMaxFilterSize; k += 2) {
    const bool in_range = 2 * k >= old && k <= 2 * old;
    if (k != old && (in_range || k == old - 2 || k == old + 2)) out.push_back(k);
  }
  return out;
}

MutationResult filter_size(const Dna& parent, std::mt19937_64& rng) {
  const std::vector<std::size_t> convs = conv_edges(parent);
  if (convs.empty()) throw MutationNotApplicable("filter-size: the DNA has no convolution");
  MutationResult r = result(parent, Mutation::FilterSize);
  Edge& e = r.child.edges[pick_from(convs, rng)];
  const bool height = coin(rng);
  int& size = height ? e.filter_h : e.filter_w;
  const int old = size;
  size = pick_from(filter_sizes_near(old), rng);
  r.detail = std::string("filter ") + (height ? "height" : "width") + " of conv " + e.id + ": " +
             std::to_string(old) + " -> " + std::to_string(size) + " (now " +
             std::to_string(e.filter_h) + "x" + std::to_string(e.filter_w) + ")";
  return r;
}

// For each backbone position j, the positions i < j whose vertex has no edge (backbone or skip)
// into vertex j yet: the sources ADD-SKIP may join to target j. A skip beside an existing edge
// would double an identity edge's signal or turn a convolution into a one-layer residual block;
// the paper's mutation refuses such a pair.
std::vector<std::vector<std::size_t>> free_skip_sources(const Dna& d, const Backbone& b) {
  std::set<std::pair<std::string, std::string>> joined;
  for (const Edge& e : d.edges) joined.emplace(e.from, e.to);
  std::vector<std::vector<std::size_t>> sources(b.order.size());
  for (std::size_t j = 0; j < b.order.size(); ++j)
    for (std::size_t i = 0; i < j; ++i)
      if (!joined.count({b.order[i], b.order[j]})) sources[j].push_back(i);
  return sources;
}

// Skips that ADD-SKIP could add: forward pairs that no edge joins yet.
std::size_t free_skip_count(const Dna& d) {
  const Backbone b = backbone_of(d);
  std::size_t n = 0;
  for (const auto& s : free_skip_sources(d, b)) n += s.size();
  return n;
}

// As the paper's published code: the target vertex first, uniformly among those with an eligible
// source, then the source uniformly among that target's eligible ones.
MutationResult add_skip(const Dna& parent, std::mt19937_64& rng) {
  const Backbone b = backbone_of(parent);
  const auto sources = free_skip_sources(parent, b);
  std::vector<std::size_t> targets;
  for (std::size_t j = 0; j < sources.size(); ++j)
    if (!sources[j].empty()) targets.push_back(j);
  if (targets.empty())
    throw MutationNotApplicable(
        parent.vertices.size() < 2
            ? "add-skip: the DNA has a single vertex; a skip needs two on the backbone"
            : "add-skip: every forward pair of backbone vertices is already joined by an edge");
  MutationResult r = result(parent, Mutation::AddSkip);
  const std::size_t to = pick_from(targets, rng);
  const std::size_t from = pick_from(sources[to], rng);
  Edge e;
  e.id = r.child.mint_id("e");
  e.from = b.order[from];
  e.to = b.order[to];
  e.type = EdgeType::Identity;
  e.skip = true;
  r.child.edges.push_back(e);
  r.detail = "add skip " + e.id + " " + e.from + " -> " + e.to;
  return r;
}

MutationResult remove_skip(const Dna& parent, std::mt19937_64& rng) {
  const std::vector<std::size_t> skips = skip_edges(parent);
  if (skips.empty()) throw MutationNotApplicable("remove-skip: the DNA has no skip edge");
  MutationResult r = result(parent, Mutation::RemoveSkip);
  const std::size_t i = pick_from(skips, rng);
  const Edge& e = parent.edges[i];
  r.detail = "remove skip " + e.id + " " + e.from + " -> " + e.to;
  r.child.edges.erase(r.child.edges.begin() + std::ptrdiff_t(i));
  return r;
}

constexpr std::pair<Mutation, const char*> kNames[] = {
    {Mutation::AlterLearningRate, "alter-learning-rate"},
    {Mutation::Identity, "identity"},
    {Mutation::ResetWeights, "reset-weights"},
    {Mutation::InsertConvolution, "insert-convolution"},
    {Mutation::RemoveConvolution, "remove-convolution"},
    {Mutation::AlterStride, "alter-stride"},
    {Mutation::AlterNumberOfChannels, "alter-number-of-channels"},
    {Mutation::FilterSize, "filter-size"},
    {Mutation::InsertOneToOne, "insert-one-to-one"},
    {Mutation::AddSkip, "add-skip"},
    {Mutation::RemoveSkip, "remove-skip"},
};
static_assert(std::size(kNames) == kMutationCount);

std::string all_names() {
  std::string out;
  for (const auto& [m, name] : kNames) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

}  // namespace

const std::vector<Mutation>& all_mutations() {
  static const std::vector<Mutation> all = [] {
    std::vector<Mutation> v;
    for (const auto& [m, name] : kNames) v.push_back(m);
    return v;
  }();
  return all;
}

const char* to_string(Mutation m) {
  for (const auto& [mm, name] : kNames)
    if (mm == m) return name;
  return "unknown-mutation";
}

Mutation parse_mutation(const std::string& name) {
  for (const auto& [m, n] : kNames)
    if (name == n) return m;
  throw UsageError("unknown mutation \"" + name + "\"; the mutations are " + all_names());
}

bool applicable(const Dna& parent, Mutation m, int input_channels) {
  switch (m) {
    case Mutation::AlterLearningRate:
    case Mutation::Identity:
    case Mutation::ResetWeights:
    case Mutation::InsertConvolution:
    case Mutation::InsertOneToOne:
      return true;
    case Mutation::AlterStride:
    case Mutation::FilterSize:
      return !conv_edges(parent).empty();
    case Mutation::RemoveConvolution:
      return !removable_convs(parent, backbone_of(parent), input_channels).empty();
    case Mutation::AlterNumberOfChannels:
      return !alterable_convs(parent, backbone_of(parent), input_channels).empty();
    case Mutation::AddSkip:
      return free_skip_count(parent) > 0;
    case Mutation::RemoveSkip:
      return !skip_edges(parent).empty();
  }
  return false;
}

MutationResult apply_mutation(const Dna& parent, Mutation m, std::mt19937_64& rng,
                              int input_channels) {
  if (input_channels < 1 || input_channels > kMaxChannels)
    throw UsageError("mutation: input_channels " + std::to_string(input_channels) +
                     " is out of range (1 to " + std::to_string(kMaxChannels) + ")");
  MutationResult r;
  switch (m) {
    case Mutation::AlterLearningRate:
      r = alter_learning_rate(parent, rng);
      break;
    case Mutation::Identity:
      r = result(parent, m);
      r.detail = "identity: no change (keep training)";
      break;
    case Mutation::ResetWeights:
      r = result(parent, m);
      r.reset_weights = true;
      r.detail = "reset weights: same DNA, every weight initialised afresh";
      break;
    case Mutation::InsertConvolution:
      r = insert_vertex(parent, true, rng);
      break;
    case Mutation::RemoveConvolution:
      r = remove_convolution(parent, rng, input_channels);
      break;
    case Mutation::AlterStride:
      r = alter_stride(parent, rng);
      break;
    case Mutation::AlterNumberOfChannels:
      r = alter_number_of_channels(parent, rng, input_channels);
      break;
    case Mutation::FilterSize:
      r = filter_size(parent, rng);
      break;
    case Mutation::InsertOneToOne:
      r = insert_vertex(parent, false, rng);
      break;
    case Mutation::AddSkip:
      r = add_skip(parent, rng);
      break;
    case Mutation::RemoveSkip:
      r = remove_skip(parent, rng);
      break;
  }
  // A bug here must surface as a bad mutation, not as a child that fails later in training.
  validate(r.child);
  return r;
}

MutationResult mutate(const Dna& parent, std::mt19937_64& rng, int input_channels) {
  // Redrawing until one applies = a uniform choice among the applicable ones.
  for (;;) {
    const Mutation m = all_mutations()[pick(kMutationCount, rng)];
    if (applicable(parent, m, input_channels))
      return apply_mutation(parent, m, rng, input_channels);
  }
}

}  // namespace evo
