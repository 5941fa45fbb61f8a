// Property tests of the eleven mutations over thousands of random DNAs: valid children, each
// mutation doing what its name says and nothing else, ids and weight keys kept. Not training.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "evo/dna.h"
#include "evo/mutation.h"
#include "support.h"

using namespace evo;

namespace {

std::string dna_path(const std::string& name) {
  return std::string(EVO_SOURCE_DIR) + "/data/dna/" + name;
}

// Where the random walks start: the paper's initial individual and every reference DNA.
const std::vector<Dna>& seeds() {
  static const std::vector<Dna> all = {initial_dna(), load_dna(dna_path("initial.json")),
                                       load_dna(dna_path("four_conv.json")),
                                       load_dna(dna_path("skips.json"))};
  return all;
}

// The backbone walked independently of the code under test: vertex id -> position.
std::map<std::string, int> backbone_positions(const Dna& d) {
  std::map<std::string, const Edge*> out;
  for (const Edge& e : d.edges)
    if (!e.skip) out[e.from] = &e;
  std::map<std::string, int> pos;
  std::string at = d.input;
  for (int k = 0;; ++k) {
    pos[at] = k;
    if (at == d.output || !out.count(at)) break;
    at = out[at]->to;
  }
  return pos;
}

// Channels of every vertex, and the parameters by key, for a 32x32x3 input (3 channels is the
// worst case for channel limits).
struct Shapes {
  std::map<std::string, int> channels;
  std::map<std::string, std::vector<int64_t>> params;
};

Shapes shapes_of(const CompiledDna& plan) {
  Shapes s;
  for (const VertexPlan& v : plan.vertices) s.channels[v.id] = v.shape.c;
  for (const ParamInfo& p : plan.params) s.params[p.key] = p.shape;
  return s;
}

bool same_conv(const Edge& a, const Edge& b) {
  return a.type == EdgeType::Conv && b.type == EdgeType::Conv && a.depth_factor == b.depth_factor &&
         a.filter_h == b.filter_h && a.filter_w == b.filter_w;
}

// Collects what went wrong with one child; the message is only built on failure.
struct Problems {
  std::vector<std::string> list;
  bool ok() const { return list.empty(); }
  std::string str() const {
    std::string out;
    for (const std::string& p : list) out += "  - " + p + "\n";
    return out;
  }
};
#define EXPECT(cond, msg)                                                    \
  do {                                                                       \
    if (!(cond)) problems.list.push_back(std::string(#cond) + ": " + (msg)); \
  } while (0)

// Per-id differences between parent and child.
struct Diff {
  std::vector<std::string> added_v, removed_v, changed_v;
  std::vector<std::string> added_e, removed_e, changed_e;
};

Diff diff(const Dna& p, const Dna& c) {
  Diff d;
  for (const Vertex& v : p.vertices) {
    const Vertex* w = c.find_vertex(v.id);
    if (!w)
      d.removed_v.push_back(v.id);
    else if (!(*w == v))
      d.changed_v.push_back(v.id);
  }
  for (const Vertex& v : c.vertices)
    if (!p.find_vertex(v.id)) d.added_v.push_back(v.id);
  for (const Edge& e : p.edges) {
    const Edge* f = c.find_edge(e.id);
    if (!f)
      d.removed_e.push_back(e.id);
    else if (!(*f == e))
      d.changed_e.push_back(e.id);
  }
  for (const Edge& e : c.edges)
    if (!p.find_edge(e.id)) d.added_e.push_back(e.id);
  return d;
}

// Counters the statistical tests read after the property sweep.
struct Observed {
  std::array<int, kMutationCount> applied{};
};

// The mutation-specific half of the check: it did what its name says and nothing else.
void check_semantics(const Dna& p, const MutationResult& r, Problems& problems) {
  const Dna& c = r.child;
  const Diff d = diff(p, c);
  const auto pp = backbone_positions(p), cp = backbone_positions(c);
  const bool same_top = c.input == p.input && c.learning_rate == p.learning_rate;
  auto nothing_structural = [&] {
    return d.added_v.empty() && d.removed_v.empty() && d.changed_v.empty() && d.added_e.empty() &&
           d.removed_e.empty() && c.output == p.output && c.next_id == p.next_id;
  };

  switch (r.mutation) {
    case Mutation::Identity:
    case Mutation::ResetWeights:
      EXPECT(c == p, "the DNA must not change");
      break;

    case Mutation::AlterLearningRate: {
      Dna same = c;
      same.learning_rate = p.learning_rate;
      EXPECT(same == p, "only the learning rate may change");
      const double ratio = c.learning_rate / p.learning_rate;
      EXPECT(ratio >= 0.5 * (1 - 1e-12) && ratio <= 2 * (1 + 1e-12),
             "factor " + std::to_string(ratio));
      break;
    }

    case Mutation::InsertConvolution:
    case Mutation::InsertOneToOne: {
      const bool conv = r.mutation == Mutation::InsertConvolution;
      EXPECT(same_top, "input and learning rate unchanged");
      EXPECT(d.added_v.size() == 1 && d.added_e.size() == 1, "one new vertex and one new edge");
      EXPECT(d.removed_v.empty() && d.removed_e.empty() && d.changed_v.empty(), "nothing removed");
      EXPECT(c.next_id == p.next_id + 2, "two ids minted");
      EXPECT(c.vertices.size() == p.vertices.size() + 1 && cp.size() == pp.size() + 1,
             "backbone one longer");
      if (d.added_v.size() != 1 || d.added_e.size() != 1) break;
      const std::string w = d.added_v[0];
      const Edge& e = *c.find_edge(d.added_e[0]);
      const std::string u = e.from;
      EXPECT(e.to == w && !e.skip && pp.count(u), "new backbone edge u -> w from an old vertex");
      if (conv)
        EXPECT(e.type == EdgeType::Conv && e.filter_h == 3 && e.filter_w == 3 &&
                   e.depth_factor == 1.0 && (e.stride_scale == 0 || e.stride_scale == 1),
               "3x3, depth factor 1, stride 1 or 2");
      else
        EXPECT(e.type == EdgeType::Identity, "an identity edge");
      EXPECT(cp.count(w) && cp.count(u) && cp.at(w) == cp.at(u) + 1, "w right after u");
      // The only changed edge is u's old backbone out-edge, which now starts at w.
      const Edge* old_out = nullptr;
      for (const Edge& pe : p.edges)
        if (!pe.skip && pe.from == u) old_out = &pe;
      EXPECT(d.changed_e.size() == (old_out ? 1u : 0u), "only u's out-edge rewired");
      if (old_out) {
        Edge moved = *old_out;
        moved.from = w;
        EXPECT(c.find_edge(old_out->id) && *c.find_edge(old_out->id) == moved,
               "u's old out-edge " + old_out->id + " starts at w, otherwise unchanged");
        EXPECT(c.output == p.output, "output unchanged");
      } else {
        EXPECT(u == p.output && c.output == w, "inserted after the output: w is the output");
      }
      break;
    }

    case Mutation::RemoveConvolution: {
      EXPECT(same_top && c.next_id == p.next_id, "input, learning rate, next_id unchanged");
      EXPECT(d.added_v.empty() && d.added_e.empty() && d.changed_v.empty(), "nothing added");
      EXPECT(d.removed_v.size() == 1, "one vertex removed");
      EXPECT(cp.size() + 1 == pp.size(), "backbone one shorter");
      const Edge* removed = nullptr;
      for (const std::string& id : d.removed_e) {
        const Edge* e = p.find_edge(id);
        if (e->type == EdgeType::Conv) {
          EXPECT(!removed, "only one conv removed");
          removed = e;
        }
      }
      EXPECT(removed != nullptr, "a conv removed");
      if (!removed || d.removed_v.size() != 1) break;
      const std::string u = removed->from, v = removed->to;
      EXPECT(d.removed_v[0] == v, "its target vertex removed");
      EXPECT(c.output == (p.output == v ? u : p.output), "output moves to u only if v was it");
      std::string succ = u;
      for (const Edge& e : p.edges)
        if (!e.skip && e.from == v) succ = e.to;
      std::set<std::pair<std::string, std::string>> child_pairs;  // every edge of the child
      for (const Edge& e : c.edges) child_pairs.emplace(e.from, e.to);
      for (const Edge& e : p.edges) {
        if (e.id == removed->id) continue;
        const Edge* now = c.find_edge(e.id);
        const bool touches = e.from == v || e.to == v;
        if (!touches) {
          // Unchanged, except a skip u -> succ that the new backbone edge now parallels: dropped.
          if (!now && e.skip && e.from == u && e.to == succ) continue;
          EXPECT(now && *now == e, "edge " + e.id + " not touching v is unchanged");
          continue;
        }
        Edge expect = e;
        if (e.from == v) expect.from = u;
        if (e.to == v) expect.to = succ;
        if (!e.skip) {
          EXPECT(now && *now == expect, "v's out-edge " + e.id + " now starts at u");
        } else if (now) {
          EXPECT(*now == expect, "skip " + e.id + " re-sourced to u / re-targeted past v");
        } else {
          // Dropped only when rewiring would make a self-loop or join a pair a kept edge joins.
          EXPECT(expect.from == expect.to || child_pairs.count({expect.from, expect.to}),
                 "skip " + e.id + " dropped without reason");
        }
      }
      break;
    }

    case Mutation::AlterStride:
    case Mutation::AlterNumberOfChannels:
    case Mutation::FilterSize: {
      EXPECT(same_top && nothing_structural(), "structure unchanged");
      EXPECT(d.changed_e.size() == 1, "exactly one edge changed");
      if (d.changed_e.size() != 1) break;
      const Edge& a = *p.find_edge(d.changed_e[0]);
      const Edge& b = *c.find_edge(d.changed_e[0]);
      EXPECT(a.type == EdgeType::Conv, "a convolution");
      Edge back = b;
      if (r.mutation == Mutation::AlterStride) {
        back.stride_scale = a.stride_scale;
        EXPECT(std::abs(b.stride_scale - a.stride_scale) == 1, "stride doubled or halved");
        EXPECT(b.stride_scale >= 0 && b.stride_scale <= kMaxStrideScale, "within limits");
      } else if (r.mutation == Mutation::AlterNumberOfChannels) {
        back.depth_factor = a.depth_factor;
        const double ratio = b.depth_factor / a.depth_factor;
        EXPECT(
            ratio >= 0.5 * (1 - 1e-12) && ratio <= 2 * (1 + 1e-12),
            "factor " + std::to_string(a.depth_factor) + " -> " + std::to_string(b.depth_factor));
        EXPECT(b.depth_factor > 0 && b.depth_factor <= kMaxDepthFactor, "within limits");
      } else {
        back.filter_h = a.filter_h;
        back.filter_w = a.filter_w;
        const bool h = b.filter_h != a.filter_h, w = b.filter_w != a.filter_w;
        EXPECT(h != w, "exactly one of height and width changed");
        const int o = h ? a.filter_h : a.filter_w, n = h ? b.filter_h : b.filter_w;
        EXPECT(n % 2 == 1 && n >= 1 && n <= kMaxFilterSize,
               "odd, within limits: " + std::to_string(n));
        EXPECT(n != o && ((2 * n >= o && n <= 2 * o) || std::abs(n - o) == 2),
               std::to_string(o) + " -> " + std::to_string(n) + " not in [half, twice] or next");
      }
      EXPECT(back == a, "no other field of the conv changed");
      break;
    }

    case Mutation::AddSkip: {
      EXPECT(same_top && c.output == p.output && c.next_id == p.next_id + 1, "one id minted");
      EXPECT(d.added_e.size() == 1 && d.removed_e.empty() && d.changed_e.empty() &&
                 d.added_v.empty() && d.removed_v.empty() && d.changed_v.empty(),
             "exactly one new edge, nothing else");
      if (d.added_e.size() != 1) break;
      const Edge& e = *c.find_edge(d.added_e[0]);
      EXPECT(e.skip && e.type == EdgeType::Identity, "an identity skip");
      EXPECT(pp.count(e.from) && pp.count(e.to) && pp.at(e.from) < pp.at(e.to), "forward");
      for (const Edge& pe : p.edges)
        EXPECT(!(pe.from == e.from && pe.to == e.to), "not parallel to an edge of the parent");
      break;
    }

    case Mutation::RemoveSkip: {
      EXPECT(same_top && c.output == p.output && c.next_id == p.next_id, "top unchanged");
      EXPECT(d.removed_e.size() == 1 && d.added_e.empty() && d.changed_e.empty() &&
                 d.added_v.empty() && d.removed_v.empty() && d.changed_v.empty(),
             "exactly one edge removed, nothing else");
      if (d.removed_e.size() == 1) EXPECT(p.find_edge(d.removed_e[0])->skip, "it was a skip");
      break;
    }
  }
}

// Weight inheritance: every untouched owner keeps its tensor's key, and its shape whenever the
// channels it depends on are unchanged. Mutations other than ALTER-NUMBER-OF-CHANNELS and
// REMOVE-CONVOLUTION change no channel count at all, so they keep every untouched tensor.
void check_inheritance(const Dna& p, const MutationResult& r, const Shapes& ps, const Shapes& cs,
                       Problems& problems) {
  const Dna& c = r.child;
  const bool channel_mutation =
      r.mutation == Mutation::AlterNumberOfChannels || r.mutation == Mutation::RemoveConvolution;
  if (!channel_mutation) {
    for (const auto& [id, ch] : ps.channels)
      EXPECT(!cs.channels.count(id) || cs.channels.at(id) == ch,
             "vertex " + id + " changed channels");
    // An inserted vertex has its predecessor's channels (depth factor 1 or identity).
    for (const Edge& e : c.edges)
      if (!e.skip && !p.find_vertex(e.to))
        EXPECT(cs.channels.at(e.to) == cs.channels.at(e.from), "new vertex " + e.to);
  } else {
    // Upstream of the change nothing moves.
    const auto pp = backbone_positions(p);
    int first_changed = int(pp.size());
    for (const Edge& e : p.edges) {
      const Edge* now = c.find_edge(e.id);
      if (e.type == EdgeType::Conv && (!now || !(*now == e)))
        first_changed = std::min(first_changed, pp.at(e.to));
    }
    for (const auto& [id, pos] : pp)
      if (pos < first_changed)
        EXPECT(cs.channels.count(id) && cs.channels.at(id) == ps.channels.at(id),
               "upstream vertex " + id + " changed channels");
  }
  for (const auto& [key, shape] : ps.params) {
    const std::string owner = key.substr(0, key.find('.'));
    bool keep = false;  // whether the key must survive with this shape
    if (owner == "fc") {
      keep = cs.channels.at(c.output) == ps.channels.at(p.output);
      EXPECT(cs.params.count(key), "fc tensor " + key + " lost");
    } else if (const Vertex* v = c.find_vertex(owner)) {
      EXPECT(cs.params.count(key), "batch-norm tensor " + key + " of a kept vertex lost");
      keep = v->activation == Activation::BnRelu && cs.channels.at(owner) == ps.channels.at(owner);
    } else if (const Edge* e = c.find_edge(owner)) {
      EXPECT(cs.params.count(key), "filter " + key + " of a kept conv lost");
      keep = same_conv(*e, *p.find_edge(owner)) &&
             cs.channels.at(e->from) == ps.channels.at(p.find_edge(owner)->from);
    }
    if (keep)
      EXPECT(cs.params.count(key) && cs.params.at(key) == shape,
             "tensor " + key + " should be inherited with its shape");
  }
}

// Everything a child must satisfy; returns the problems found.
Problems check_child(const Dna& parent, Mutation m, const MutationResult& r) {
  Problems problems;
  const Dna& c = r.child;
  EXPECT(r.mutation == m, "reports the mutation asked for");
  EXPECT(r.reset_weights == (m == Mutation::ResetWeights), "reset flag only for RESET-WEIGHTS");
  EXPECT(!r.detail.empty(), "a detail line");
  // No two edges ever join the same two vertices (the paper's ADD-SKIP refuses such a pair; a skip
  // over an identity edge would double the signal, over a convolution add a one-layer residual).
  {
    std::set<std::pair<std::string, std::string>> joined;
    for (const Edge& e : c.edges)
      EXPECT(joined.emplace(e.from, e.to).second,
             "two edges join " + e.from + " -> " + e.to + " (" + e.id + ")");
  }
  try {
    validate(c);
    compile(c, 28, 28, 1, 10);
    const CompiledDna rgb = compile(c, 32, 32, 3, 10);
    check_semantics(parent, r, problems);
    const CompiledDna parent_rgb = compile(parent, 32, 32, 3, 10);
    check_inheritance(parent, r, shapes_of(parent_rgb), shapes_of(rgb), problems);
  } catch (const std::exception& e) {
    problems.list.push_back(std::string("child does not validate or compile: ") + e.what());
  }
  return problems;
}

// Prints the first few bad children in full (parent, child, what is wrong) and counts the rest,
// so one bug does not bury the log under thousands of DNAs.
int report(const Dna& parent, Mutation m, const MutationResult& r, const Problems& problems) {
  static int printed = 0;
  if (problems.ok()) return 0;
  if (printed++ < 3)
    FAIL_CHECK(to_string(m) << ": " << r.detail << "\n"
                            << problems.str() << "parent:\n"
                            << to_json(parent) << "child:\n"
                            << to_json(r.child));
  return 1;
}

}  // namespace

TEST_CASE("names round-trip and unknown names list every mutation", "[mutation]") {
  const std::vector<std::string> names = {"alter-learning-rate",
                                          "identity",
                                          "reset-weights",
                                          "insert-convolution",
                                          "remove-convolution",
                                          "alter-stride",
                                          "alter-number-of-channels",
                                          "filter-size",
                                          "insert-one-to-one",
                                          "add-skip",
                                          "remove-skip"};
  REQUIRE(all_mutations().size() == names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    CHECK(to_string(all_mutations()[i]) == names[i]);
    CHECK(parse_mutation(names[i]) == all_mutations()[i]);
  }
  try {
    parse_mutation("insert-conv");
    FAIL("an unknown name must throw");
  } catch (const UsageError& e) {
    const std::string what = e.what();
    CHECK(what.find("insert-conv\"") != std::string::npos);
    for (const std::string& n : names) CHECK(what.find(n) != std::string::npos);
  }
}

TEST_CASE("every mutation on thousands of random DNAs: valid, as named, ids and weights kept",
          "[mutation]") {
  int checked = 0, not_applicable = 0, bad = 0;
  std::array<int, kMutationCount> applied{};
  for (int walk = 0; walk < 120; ++walk) {
    Dna d = seeds()[std::size_t(walk) % seeds().size()];
    for (int step = 0; step < 40; ++step) {
      for (Mutation m : all_mutations()) {
        const bool can = applicable(d, m);
        if (!can) {
          ++not_applicable;
          CHECK_THROWS_AS(apply_mutation(d, m, test::rng()), MutationNotApplicable);
          continue;
        }
        const Dna before = d;
        const MutationResult r = apply_mutation(d, m, test::rng());
        if (!(d == before)) FAIL_CHECK("the parent changed");
        bad += report(d, m, r, check_child(d, m, r));
        ++applied[std::size_t(m)];
        ++checked;
      }
      // Walk on by the paper's rule, which is checked like any other child.
      const MutationResult r = mutate(d, test::rng());
      bad += report(d, r.mutation, r, check_child(d, r.mutation, r));
      d = r.child;
    }
  }
  INFO("checked " << checked << " children, " << not_applicable << " not applicable");
  CHECK(bad == 0);
  CHECK(checked > 30000);
  for (Mutation m : all_mutations()) {
    INFO(to_string(m));
    CHECK(applied[std::size_t(m)] > 500);  // every mutation was exercised on many DNAs
  }
}

TEST_CASE("mutations that cannot apply throw MutationNotApplicable with a reason", "[mutation]") {
  const Dna initial = initial_dna();
  for (Mutation m :
       {Mutation::RemoveConvolution, Mutation::AlterStride, Mutation::AlterNumberOfChannels,
        Mutation::FilterSize, Mutation::AddSkip, Mutation::RemoveSkip}) {
    INFO(to_string(m));
    CHECK_FALSE(applicable(initial, m));
    try {
      apply_mutation(initial, m, test::rng());
      FAIL_CHECK("must throw");
    } catch (const MutationNotApplicable& e) {
      CHECK(std::string(e.what()).find(to_string(m)) == 0);  // names the mutation
    }
  }
  for (Mutation m : {Mutation::AlterLearningRate, Mutation::Identity, Mutation::ResetWeights,
                     Mutation::InsertConvolution, Mutation::InsertOneToOne})
    CHECK(applicable(initial, m));

  const Dna four = load_dna(dna_path("four_conv.json"));
  CHECK_FALSE(applicable(four, Mutation::RemoveSkip));
  CHECK_THROWS_WITH(apply_mutation(four, Mutation::RemoveSkip, test::rng()),
                    Catch::Contains("no skip"));

  // Every forward pair joined (by the backbone or a skip): ADD-SKIP has nowhere to go.
  Dna full = four;
  const std::vector<std::string> order = {"v0", "v1", "v2", "v3", "v4"};
  for (std::size_t i = 0; i < order.size(); ++i)
    for (std::size_t j = i + 2; j < order.size(); ++j) {
      CHECK(applicable(full, Mutation::AddSkip));
      Edge s;
      s.id = full.mint_id("e");
      s.from = order[i], s.to = order[j], s.skip = true;
      full.edges.push_back(s);
    }
  validate(full);
  CHECK_FALSE(applicable(full, Mutation::AddSkip));
  CHECK_THROWS_AS(apply_mutation(full, Mutation::AddSkip, test::rng()), MutationNotApplicable);
}

TEST_CASE("channel limits: removals and depth factors never push a vertex past kMaxChannels",
          "[mutation]") {
  // v0 -(x1024)-> v1 -(x0.25)-> v2 -(x4)-> v3: 3, 3072, 768, 3072 channels on RGB. Removing the
  // x0.25 conv would give 12,288; the first conv's factor can rise only to about 1365.
  Dna d = parse_dna(R"({"format": "evo-dna/1", "learning_rate": 0.1, "input": "v0",
    "output": "v3", "next_id": 7,
    "vertices": [{"id": "v0", "activation": "linear"}, {"id": "v1", "activation": "bn_relu"},
                 {"id": "v2", "activation": "bn_relu"}, {"id": "v3", "activation": "bn_relu"}],
    "edges": [
      {"id": "e4", "from": "v0", "to": "v1", "type": "conv", "skip": false, "depth_factor": 1024,
       "filter": [3, 3], "stride_scale": 0},
      {"id": "e5", "from": "v1", "to": "v2", "type": "conv", "skip": false, "depth_factor": 0.25,
       "filter": [3, 3], "stride_scale": 0},
      {"id": "e6", "from": "v2", "to": "v3", "type": "conv", "skip": false, "depth_factor": 4,
       "filter": [3, 3], "stride_scale": 0}]})");
  std::set<std::string> removed;
  double highest = 0;
  for (int k = 0; k < 400; ++k) {
    const MutationResult r = apply_mutation(d, Mutation::RemoveConvolution, test::rng());
    for (const Edge& e : d.edges)
      if (!r.child.find_edge(e.id)) removed.insert(e.id);
    CHECK_NOTHROW(compile(r.child, 32, 32, 3, 10));
    const MutationResult a = apply_mutation(d, Mutation::AlterNumberOfChannels, test::rng());
    CHECK_NOTHROW(compile(a.child, 32, 32, 3, 10));
    highest = std::max(highest, a.child.find_edge("e4")->depth_factor);
  }
  CHECK(removed == std::set<std::string>{"e4", "e6"});
  CHECK(highest > 1024);        // the range is cut, not emptied
  CHECK(highest < 4096.5 / 3);  // llround(3 x factor) <= 4096

  // A conv whose halved factor is still too wide for RGB: not applicable for 3 channels, fine
  // for 1.
  Dna wide = initial_dna();
  wide = apply_mutation(wide, Mutation::InsertConvolution, test::rng()).child;
  wide.edges[0].depth_factor = 4096;
  CHECK_FALSE(applicable(wide, Mutation::AlterNumberOfChannels, 3));
  CHECK_THROWS_AS(apply_mutation(wide, Mutation::AlterNumberOfChannels, test::rng(), 3),
                  MutationNotApplicable);
  CHECK(applicable(wide, Mutation::AlterNumberOfChannels, 1));
  const double f = apply_mutation(wide, Mutation::AlterNumberOfChannels, test::rng(), 1)
                       .child.edges[0]
                       .depth_factor;
  CHECK(f >= 2048);
  CHECK(f <= 4096);
}

TEST_CASE("ALTER-LEARNING-RATE is log-uniform in [1/2, 2]", "[mutation]") {
  // Equal-width bins of log2(factor) over [-1, 1] each hold a quarter. A linear draw on [0.5, 2]
  // would put 14% in the lowest bin, far outside the bound.
  const int n = 4000;
  std::array<int, 4> bins{};
  double sum = 0;
  const Dna d = initial_dna();
  for (int k = 0; k < n; ++k) {
    const double f =
        apply_mutation(d, Mutation::AlterLearningRate, test::rng()).child.learning_rate / 0.1;
    REQUIRE(f >= 0.5 * (1 - 1e-12));
    REQUIRE(f <= 2 * (1 + 1e-12));
    const double l = std::log2(f);
    sum += l;
    ++bins[std::size_t(std::clamp(int((l + 1) * 2), 0, 3))];
  }
  for (int b : bins) {
    CHECK(b > 0.21 * n);
    CHECK(b < 0.29 * n);
  }
  CHECK(std::fabs(sum / n) < 0.05);  // sd of the mean is 0.58 / sqrt(n) = 0.009
}

TEST_CASE("numbers change around the old value: depth factor, stride, filter size", "[mutation]") {
  const Dna four = load_dna(dna_path("four_conv.json"));  // factors 32, 2, 1, 2
  // Depth factor: uniform in [half, twice], so thirds of [0.5, 2] in the ratio are equally full
  // (a log-uniform draw would put half below 1).
  const int n = 3000;
  std::array<int, 3> thirds{};
  for (int k = 0; k < n; ++k) {
    const MutationResult r = apply_mutation(four, Mutation::AlterNumberOfChannels, test::rng());
    for (std::size_t i = 0; i < four.edges.size(); ++i)
      if (r.child.edges[i].depth_factor != four.edges[i].depth_factor) {
        const double ratio = r.child.edges[i].depth_factor / four.edges[i].depth_factor;
        ++thirds[std::size_t(std::clamp(int((ratio - 0.5) / 0.5), 0, 2))];
      }
  }
  for (int t : thirds) {
    CHECK(t > 0.28 * n);
    CHECK(t < 0.39 * n);
  }

  // Stride and filter size on a one-conv DNA, from several starting values.
  Dna one = apply_mutation(initial_dna(), Mutation::InsertConvolution, test::rng()).child;
  auto seen_after = [&](Mutation m, auto setup, auto read) {
    std::set<int> seen;
    for (int k = 0; k < 300; ++k) {
      Dna d = one;
      setup(d.edges[0]);
      seen.insert(read(apply_mutation(d, m, test::rng()).child.edges[0]));
    }
    return seen;
  };
  auto stride_from = [&](int s) {
    return seen_after(
        Mutation::AlterStride, [s](Edge& e) { e.stride_scale = s; },
        [](const Edge& e) { return e.stride_scale; });
  };
  CHECK(stride_from(0) == std::set<int>{1});
  CHECK(stride_from(1) == std::set<int>{0, 2});
  CHECK(stride_from(kMaxStrideScale) == std::set<int>{kMaxStrideScale - 1});
  // Filter size: both dimensions set to k, so whichever changes, the changed one differs from k.
  auto filter_from = [&](int k) {
    std::set<int> seen = seen_after(
        Mutation::FilterSize, [k](Edge& e) { e.filter_h = e.filter_w = k; },
        [k](const Edge& e) { return e.filter_h != k ? e.filter_h : e.filter_w; });
    return seen;
  };
  CHECK(filter_from(1) == std::set<int>{3});
  CHECK(filter_from(3) == std::set<int>{1, 5});
  CHECK(filter_from(5) == std::set<int>{3, 7, 9});
  CHECK(filter_from(7) == std::set<int>{5, 9, 11, 13});
  REQUIRE(kMaxFilterSize == 63);
  CHECK(filter_from(kMaxFilterSize) ==
        std::set<int>{33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61});
}

TEST_CASE("inserts pick the place, stride and activation uniformly", "[mutation]") {
  const Dna four = load_dna(dna_path("four_conv.json"));  // 5 backbone vertices
  const int n = 5000;
  std::map<std::string, int> after;
  int stride2 = 0, bn = 0;
  std::string new_edge = "e";  // minted second, after the vertex
  new_edge += std::to_string(four.next_id + 1);
  for (int k = 0; k < n; ++k) {
    const MutationResult r = apply_mutation(four, Mutation::InsertConvolution, test::rng());
    const Edge& e = *r.child.find_edge(new_edge);
    ++after[e.from];
    stride2 += e.stride_scale == 1;
    bn += r.child.find_vertex(e.to)->activation == Activation::BnRelu;
  }
  REQUIRE(after.size() == 5);
  for (const auto& [v, count] : after) {
    INFO(v);
    CHECK(count > 0.16 * n);
    CHECK(count < 0.24 * n);
  }
  CHECK(stride2 > 0.45 * n);
  CHECK(stride2 < 0.55 * n);
  CHECK(bn > 0.45 * n);
  CHECK(bn < 0.55 * n);
}

// The paper's published code draws the target vertex first (any with an eligible source), then a
// source before it whose pair has no edge yet. On four_conv.json (v0..v4, backbone edges between
// neighbours) the targets v2, v3, v4 have 1, 2 and 3 eligible sources: each target 1/3 of the time,
// so the pair (v0, v2) has probability 1/3 and (v0, v4) 1/9, where a uniform draw over the six
// pairs would give 1/6 each.
TEST_CASE("ADD-SKIP draws the target first, then a source with no edge to it", "[mutation]") {
  const Dna four = load_dna(dna_path("four_conv.json"));
  std::map<std::pair<std::string, std::string>, int> seen;
  const int draws = 9000;
  for (int i = 0; i < draws; ++i) {
    const MutationResult r = apply_mutation(four, Mutation::AddSkip, test::rng());
    const Edge& e = r.child.edges.back();
    ++seen[{e.from, e.to}];
  }
  CHECK(seen.size() == 6);  // (v0,v2) (v0,v3) (v1,v3) (v0,v4) (v1,v4) (v2,v4); no neighbours
  for (const auto& [pair, count] : seen) INFO(pair.first << " -> " << pair.second << ": " << count);
  const auto p = [&](const char* a, const char* b) { return double(seen[{a, b}]) / draws; };
  // Binomial sd at 9,000 draws is <= 0.005: 0.025 is five of them.
  CHECK(p("v0", "v2") == Approx(1.0 / 3).margin(0.025));
  CHECK(p("v0", "v3") == Approx(1.0 / 6).margin(0.025));
  CHECK(p("v1", "v3") == Approx(1.0 / 6).margin(0.025));
  for (const char* from : {"v0", "v1", "v2"}) CHECK(p(from, "v4") == Approx(1.0 / 9).margin(0.025));
}

TEST_CASE("mutate() picks the eleven uniformly, redrawing the inapplicable", "[mutation]") {
  // skips.json: convs and skips present, free skip pairs left: all eleven apply.
  const Dna skips = load_dna(dna_path("skips.json"));
  for (Mutation m : all_mutations()) REQUIRE(applicable(skips, m));
  const int n = 11000;
  std::array<int, kMutationCount> counts{};
  for (int k = 0; k < n; ++k) ++counts[std::size_t(mutate(skips, test::rng()).mutation)];
  for (Mutation m : all_mutations()) {
    INFO(to_string(m) << ": " << counts[std::size_t(m)]);
    CHECK(counts[std::size_t(m)] > 850);  // expected 1000, sd 30
    CHECK(counts[std::size_t(m)] < 1150);
  }
  // The initial individual: only the five that apply, a fifth each.
  std::array<int, kMutationCount> initial{};
  for (int k = 0; k < 5000; ++k)
    ++initial[std::size_t(mutate(initial_dna(), test::rng()).mutation)];
  for (Mutation m : all_mutations()) {
    INFO(to_string(m) << ": " << initial[std::size_t(m)]);
    if (applicable(initial_dna(), m)) {
      CHECK(initial[std::size_t(m)] > 850);
      CHECK(initial[std::size_t(m)] < 1150);
    } else {
      CHECK(initial[std::size_t(m)] == 0);
    }
  }
}

// `evo mutate` prints what apply_mutation returns for its seed: tests/test_cli.cpp runs it.
TEST_CASE("the same seed gives the same child", "[mutation]") {
  const Dna skips = load_dna(dna_path("skips.json"));
  const uint64_t seed = test::rng()();
  for (Mutation m : all_mutations()) {
    std::mt19937_64 a(seed), b(seed);
    CHECK(apply_mutation(skips, m, a).child == apply_mutation(skips, m, b).child);
  }
}
