// Tests of the model built from a DNA: whole-model gradients against finite differences (skips and
// mismatched shapes included), weight files and inheritance. Not training quality (test_train).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "evo/model.h"
#include "support.h"

using namespace evo;

namespace {

std::string source_path(const std::string& rel) { return std::string(EVO_SOURCE_DIR) + "/" + rel; }

// Mean loss of one training-mode forward pass on the CPU backend.
double mean_loss(Model& model, const int32_t* labels, int n) {
  model.forward(n, true);
  model.loss(labels, n, false);
  return double(model.loss_result()->loss_sum) / n;
}

void check_model_gradients(const Dna& dna, int h, int w, int c, int classes, int n) {
  const CompiledDna plan = compile(dna, h, w, c, classes);
  Context ctx(Device::cpu(), test::rng()());
  Weights weights = init_weights(plan, ctx);
  // Random (not unit) batch-norm scales and shifts, so their gradients are exercised too.
  for (const ParamInfo& p : plan.params) {
    if (p.kind == ParamKind::BnGamma || p.kind == ParamKind::BnBeta) {
      const std::vector<float> v = test::random_vector(std::size_t(p.elements()), 0.5f, 1.5f);
      weights.tensors[p.key] = Tensor::from_host(v, Shape(p.shape), Device::cpu());
    }
  }
  Model model(plan, n, ctx);
  model.bind(weights);
  const std::vector<float> x = test::random_vector(std::size_t(n) * h * w * c);
  std::copy(x.begin(), x.end(), model.input());
  std::vector<int32_t> labels(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) labels[std::size_t(i)] = int32_t(test::rng()() % classes);

  model.forward(n, true);
  model.loss(labels.data(), n, true);
  model.backward(n);

  // Central differences on random elements of every trainable tensor. The forward runs in float32
  // and ReLU kinks within a step of some points bend their finite differences (the difference then
  // drifts toward the backward value as the step shrinks), so the rule is statistical: nearly all
  // elements agree tightly and none is grossly off. An indexing or missing-term bug in any
  // backward breaks most elements of the tensors behind it.
  auto central = [&](float* value, std::size_t i, float eps) {
    const float saved = value[i];
    value[i] = saved + eps;
    const double up = mean_loss(model, labels.data(), n);
    value[i] = saved - eps;
    const double down = mean_loss(model, labels.data(), n);
    value[i] = saved;
    return (up - down) / (2.0 * double(eps));
  };
  int checked = 0, close = 0, far = 0;
  for (const ParamInfo& p : plan.params) {
    if (!p.trainable()) continue;
    float* value = weights.tensors[p.key].data<float>();
    const float* grad = model.gradient(p.key);
    for (int k = 0; k < 6; ++k) {
      const std::size_t i = std::size_t(test::rng()() % uint64_t(p.elements()));
      const double fd = central(value, i, 1e-3f);
      const double err = std::abs(grad[i] - fd);
      INFO(p.key << "[" << i << "]: backward " << grad[i] << ", finite difference " << fd);
      if (err > 2e-3 + 0.25 * std::abs(fd)) {
        UNSCOPED_INFO("far off: " << p.key << "[" << i << "]: backward " << grad[i]
                                  << ", finite difference " << fd);
        ++far;
      }
      close += err <= 5e-4 + 2e-2 * std::abs(fd);
      ++checked;
    }
  }
  INFO(close << " of " << checked << " elements agree within 2%");
  CHECK(close >= 0.85 * checked);
  CHECK(far <= 1);  // one point may sit right on a kink
}

}  // namespace

TEST_CASE("Whole-model gradients match finite differences: plain conv net", "[model]") {
  const Dna dna = load_dna(source_path("data/dna/four_conv.json"));
  check_model_gradients(dna, 12, 12, 1, 5, 3);
}

TEST_CASE("Whole-model gradients match finite differences: skips with mismatched shapes",
          "[model]") {
  const Dna dna = load_dna(source_path("data/dna/skips.json"));
  check_model_gradients(dna, 9, 7, 2, 4, 3);
}

TEST_CASE("Whole-model gradients, linear activations (no kinks): skips", "[model]") {
  Dna dna = load_dna(source_path("data/dna/skips.json"));
  for (Vertex& v : dna.vertices) v.activation = Activation::Linear;
  check_model_gradients(dna, 9, 7, 2, 4, 3);
}

// Chains of plain identity edges (INSERT-ONE-TO-ONE twice, into a linear and a bn_relu vertex):
// their vertices read their source's activation and their target's gradient in place (model.cpp's
// aliases), which must not change a single gradient.
TEST_CASE("Whole-model gradients: identity chains that alias their buffers", "[model]") {
  const Dna dna = parse_dna(R"({
    "format": "evo-dna/1", "learning_rate": 0.1, "input": "v0", "output": "v5",
    "vertices": [
      {"id": "v0", "activation": "linear"}, {"id": "v1", "activation": "bn_relu"},
      {"id": "v2", "activation": "linear"}, {"id": "v3", "activation": "bn_relu"},
      {"id": "v4", "activation": "linear"}, {"id": "v5", "activation": "linear"}],
    "edges": [
      {"id": "e6", "from": "v0", "to": "v1", "type": "conv", "skip": false, "depth_factor": 3.0,
       "filter": [3, 3], "stride_scale": 0},
      {"id": "e7", "from": "v1", "to": "v2", "type": "identity", "skip": false},
      {"id": "e8", "from": "v2", "to": "v3", "type": "identity", "skip": false},
      {"id": "e9", "from": "v3", "to": "v4", "type": "conv", "skip": false, "depth_factor": 1.0,
       "filter": [1, 3], "stride_scale": 1},
      {"id": "e10", "from": "v4", "to": "v5", "type": "identity", "skip": false},
      {"id": "e11", "from": "v1", "to": "v3", "type": "identity", "skip": true},
      {"id": "e12", "from": "v2", "to": "v5", "type": "identity", "skip": true}]})",
                            "identity chain");
  check_model_gradients(dna, 6, 5, 2, 3, 3);
}

TEST_CASE("Whole-model gradients: the initial individual (pool + fully connected only)",
          "[model]") {
  check_model_gradients(initial_dna(), 5, 5, 3, 6, 4);
}

// The weight file's magic number (data/dna/README.md, "Weight files").
constexpr char kMagicBytes[8] = {'E', 'V', 'O', 'W', 'E', 'I', 'G', 'H'};

TEST_CASE("Weight files round-trip and reject corrupt, truncated or foreign files", "[weights]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("evo_weights_" + std::to_string(test::rng()()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "w.evow").string();
  const CompiledDna plan = compile(load_dna(source_path("data/dna/skips.json")), 12, 12, 1, 10);
  Context ctx(Device::cpu(), 5);
  const Weights w = init_weights(plan, ctx);
  save_weights(w, path);
  const Weights back = load_weights(path, plan, Device::cpu());
  for (const auto& [key, t] : w.tensors) CHECK(back.at(key).to_host() == t.to_host());

  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto write = [&](const std::string& b) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(b.data(), std::streamsize(b.size()));
  };
  write(bytes.substr(0, bytes.size() / 2));
  CHECK_THROWS_WITH(load_weights(path, plan, Device::cpu()), Catch::Contains("truncated"));
  write(bytes.substr(0, 5));
  CHECK_THROWS_WITH(load_weights(path, plan, Device::cpu()), Catch::Contains("truncated at offset 5"));
  std::string flipped = bytes;
  flipped[bytes.size() - 100] ^= 0x40;
  write(flipped);
  CHECK_THROWS_WITH(load_weights(path, plan, Device::cpu()), Catch::Contains("CRC-32 mismatch"));
  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  write(bad_magic);
  CHECK_THROWS_WITH(load_weights(path, plan, Device::cpu()), Catch::Contains("bad magic"));
  write(bytes);
  const CompiledDna other = compile(load_dna(source_path("data/dna/four_conv.json")), 12, 12, 1, 10);
  CHECK_THROWS_WITH(load_weights(path, other, Device::cpu()),
                    Catch::Contains("written for another DNA"));
  CHECK_THROWS_WITH(load_weights((dir / "missing.evow").string(), plan, Device::cpu()),
                    Catch::Contains("no such file"));
  // Hostile files: a tensor whose dimensions multiply past 2^63 (3 x 2^31 x 2^31: the element
  // count used to wrap and pass the size check), a device, a folder, a file far larger than the
  // DNA's weights. Each a WeightsError naming the file, nothing allocated for it.
  {
    std::string b(kMagicBytes, sizeof kMagicBytes);
    auto put = [&](const auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); };
    put(uint32_t(1));  // version
    put(uint32_t(1));  // one tensor
    put(uint16_t(2));
    b += "e5";
    put(uint8_t(3));
    for (const int64_t d : {int64_t(3), int64_t(1) << 31, int64_t(1) << 31}) put(d);
    b += std::string(64, '\0');
    write(b);
    CHECK_THROWS_WITH(load_weights(path, plan, Device::cpu()),
                      Catch::Contains(path) && Catch::Contains("more elements than"));
  }
  CHECK_THROWS_WITH(load_weights("/dev/zero", plan, Device::cpu()),
                    Catch::Contains("/dev/zero") && Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(load_weights(dir.string(), plan, Device::cpu()),
                    Catch::Contains("is a directory"));
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.seekp(std::streamoff(64) << 20);  // 64 MiB, sparse
    f.put('x');
  }
  CHECK_THROWS_WITH(load_weights(path, plan, Device::cpu()),
                    Catch::Contains(path) && Catch::Contains("more than"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("Inheritance keeps tensors whose id and shape are unchanged", "[weights]") {
  const Dna parent_dna = load_dna(source_path("data/dna/four_conv.json"));
  const CompiledDna parent = compile(parent_dna, 16, 16, 1, 10);
  Context ctx(Device::cpu(), 9);
  const Weights pw = init_weights(parent, ctx);

  // The child doubles the channels of the second convolution: its filter and everything whose
  // input channels follow from it change shape; the first convolution and its vertex do not.
  Dna child_dna = parent_dna;
  child_dna.edges[1].depth_factor *= 2;
  const CompiledDna child = compile(child_dna, 16, 16, 1, 10);
  int kept = 0;
  const Weights cw = inherit_weights(parent, pw, child, ctx, Inheritance::Paper, &kept);
  int expected = 0;
  for (const ParamInfo& p : child.params) {
    const ParamInfo* q = parent.find_param(p.key);
    const bool same = q && q->shape == p.shape;
    expected += same;
    const std::vector<float> cv = cw.at(p.key).to_host();
    if (same) {
      CHECK(cv == pw.at(p.key).to_host());
    } else if (p.kind == ParamKind::ConvFilter || p.kind == ParamKind::FcWeight) {
      CHECK(cv.size() == std::size_t(p.elements()));  // freshly drawn, of the new shape
    }
  }
  CHECK(kept == expected);
  CHECK(kept > 0);
  CHECK(kept < int(child.params.size()));
  CHECK(cw.at(parent_dna.edges[0].id).to_host() == pw.at(parent_dna.edges[0].id).to_host());
}

// Inference-mode logits of `plan` with `w` on input x (n images).
std::vector<float> inference_logits(const CompiledDna& plan, Weights& w, const std::vector<float>& x,
                                    int n, Context& ctx) {
  Model model(plan, n, ctx);
  model.bind(w);
  std::copy(x.begin(), x.end(), model.input());
  model.forward(n, false);
  return std::vector<float>(model.logits(), model.logits() + std::size_t(n) * plan.classes);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

// --inheritance keep: a widened layer (every tensor downstream changes shape) and a resized filter
// compute exactly the parent's function in inference mode (new channels are read with weight 0,
// new taps are 0), on a net without skips; the paper's rule (fresh tensors) does not. The new
// output channels are the same fresh draws the paper's rule makes (same seed): they learn.
TEST_CASE("Keep inheritance: widened and resized layers start as the parent's function",
          "[weights]") {
  const Dna parent_dna = load_dna(source_path("data/dna/four_conv.json"));
  const int h = 12, w = 12, n = 6;
  const CompiledDna parent = compile(parent_dna, h, w, 1, 10);
  Context pctx(Device::cpu(), test::rng()());
  Weights pw = init_weights(parent, pctx);
  // A parent that has learned something: no unit gamma, zero beta or unit running statistics.
  for (const ParamInfo& p : parent.params) {
    if (p.kind == ParamKind::ConvFilter || p.kind == ParamKind::FcWeight) continue;
    const bool positive = p.kind == ParamKind::BnRunningVar || p.kind == ParamKind::BnGamma;
    const std::vector<float> v =
        test::random_vector(std::size_t(p.elements()), positive ? 0.5f : -0.5f, 1.5f);
    pw.tensors[p.key] = Tensor::from_host(v, Shape(p.shape), Device::cpu());
  }
  const std::vector<float> x = test::random_vector(std::size_t(n) * h * w);
  const std::vector<float> want = inference_logits(parent, pw, x, n, pctx);

  Dna widened = parent_dna, resized = parent_dna, narrowed = parent_dna;
  widened.edges[1].depth_factor *= 2;   // e6: 2x channels, so e7, e8, fc change shape too
  resized.edges[2].filter_h = resized.edges[2].filter_w = 5;  // e7: 3x3 -> 5x5
  narrowed.edges[1].depth_factor /= 2;  // e6: half the channels (approximate by design)
  for (const Dna* d : {&widened, &resized}) {
    const CompiledDna child = compile(*d, h, w, 1, 10);
    const uint64_t seed = test::rng()();
    Context kctx(Device::cpu(), seed), fctx(Device::cpu(), seed);
    int kept = 0;
    Weights keep = inherit_weights(parent, pw, child, kctx, Inheritance::Keep, &kept);
    Weights paper = inherit_weights(parent, pw, child, fctx, Inheritance::Paper);
    CHECK(kept < int(child.params.size()));  // some tensors did change shape
    const std::vector<float> got = inference_logits(child, keep, x, n, kctx);
    const std::vector<float> fresh = inference_logits(child, paper, x, n, fctx);
    double scale = 0;
    for (float v : want) scale = std::max(scale, std::abs(double(v)));
    INFO("max |logit| " << scale);
    CHECK(max_abs_diff(got, want) <= 1e-4 * std::max(1.0, scale));
    CHECK(max_abs_diff(fresh, want) > 1e-2 * std::max(1.0, scale));

    // Element by element, in double loops over [C_out, KH, KW, C_in]: old outputs keep the
    // parent's values at the centred tap, 0 elsewhere; new outputs are the paper's fresh draw.
    for (const ParamInfo& p : child.params) {
      if (p.kind != ParamKind::ConvFilter) continue;
      const ParamInfo* q = parent.find_param(p.key);
      REQUIRE(q);
      if (q->shape == p.shape) continue;
      const std::vector<float> c = keep.at(p.key).to_host(), f = paper.at(p.key).to_host(),
                               pv = pw.at(p.key).to_host();
      const int64_t co = p.shape[0], kh = p.shape[1], kw = p.shape[2], ci = p.shape[3];
      const int64_t pco = q->shape[0], pkh = q->shape[1], pkw = q->shape[2], pci = q->shape[3];
      int wrong = 0;
      for (int64_t o = 0; o < co; ++o)
        for (int64_t y = 0; y < kh; ++y)
          for (int64_t xx = 0; xx < kw; ++xx)
            for (int64_t i = 0; i < ci; ++i) {
              const std::size_t at = std::size_t(((o * kh + y) * kw + xx) * ci + i);
              const int64_t py = y - (kh - pkh) / 2, px = xx - (kw - pkw) / 2;
              float expect = f[at];
              if (o < pco)
                expect = (i < pci && py >= 0 && py < pkh && px >= 0 && px < pkw)
                             ? pv[std::size_t(((o * pkh + py) * pkw + px) * pci + i)]
                             : 0.0f;
              wrong += c[at] != expect;
            }
      INFO(p.key << " " << co << "x" << kh << "x" << kw << "x" << ci);
      CHECK(wrong == 0);
    }
  }

  // Narrowing keeps the first channels' weights on the inputs that remain.
  const CompiledDna child = compile(narrowed, h, w, 1, 10);
  Context ctx(Device::cpu(), test::rng()());
  const Weights keep = inherit_weights(parent, pw, child, ctx, Inheritance::Keep);
  const std::string e7 = parent_dna.edges[2].id;
  const ParamInfo* p = child.find_param(e7);
  const ParamInfo* q = parent.find_param(e7);
  REQUIRE(p);
  REQUIRE(q);
  REQUIRE(p->shape[3] < q->shape[3]);
  const std::vector<float> c = keep.at(e7).to_host(), pv = pw.at(e7).to_host();
  for (int64_t o = 0; o < std::min(p->shape[0], q->shape[0]); ++o)
    for (int64_t k = 0; k < 9; ++k)
      for (int64_t i = 0; i < p->shape[3]; ++i)
        CHECK(c[std::size_t((o * 9 + k) * p->shape[3] + i)] ==
              pv[std::size_t((o * 9 + k) * q->shape[3] + i)]);
}

// An inserted convolution (a key the parent lacks, C_out == C_in) starts as the identity filter
// with --inheritance keep: with a linear target vertex the child computes the parent's function.
TEST_CASE("Keep inheritance: an inserted convolution starts as the identity", "[weights]") {
  const Dna parent_dna = load_dna(source_path("data/dna/four_conv.json"));
  const int h = 10, w = 10, n = 4;
  const CompiledDna parent = compile(parent_dna, h, w, 1, 10);
  Context ctx(Device::cpu(), test::rng()());
  Weights pw = init_weights(parent, ctx);
  // Insert e99: v2 -> v99 (linear, 3x3, depth factor 1, stride 1); e7 now starts at v99.
  Dna child_dna = parent_dna;
  Vertex v = child_dna.vertices[0];
  v.id = "v99";
  v.activation = Activation::Linear;
  child_dna.vertices.push_back(v);
  Edge e = parent_dna.edges[1];
  e.id = "e99";
  e.from = parent_dna.edges[2].from;
  e.to = "v99";
  e.depth_factor = 1;
  e.filter_h = e.filter_w = 3;
  e.stride_scale = 0;
  child_dna.edges.push_back(e);
  child_dna.edges[2].from = "v99";
  child_dna.next_id = std::max<int64_t>(child_dna.next_id, 100);
  const CompiledDna child = compile(child_dna, h, w, 1, 10);
  Weights keep = inherit_weights(parent, pw, child, ctx, Inheritance::Keep);
  const ParamInfo* p = child.find_param("e99");
  REQUIRE(p);
  const std::vector<float> f = keep.at("e99").to_host();
  const int64_t c = p->shape[0];
  REQUIRE(p->shape[3] == c);
  for (int64_t o = 0; o < c; ++o)
    for (int64_t k = 0; k < 9; ++k)
      for (int64_t i = 0; i < c; ++i)
        CHECK(f[std::size_t((o * 9 + k) * c + i)] == (k == 4 && i == o ? 1.0f : 0.0f));
  const std::vector<float> x = test::random_vector(std::size_t(n) * h * w);
  const std::vector<float> want = inference_logits(parent, pw, x, n, ctx);
  const std::vector<float> got = inference_logits(child, keep, x, n, ctx);
  CHECK(max_abs_diff(got, want) <= 1e-4);
}

// The paper's init_scale: a fresh convolution into a vertex that sums k in-edges is drawn with
// variance 2 / (fan_in * k), so the sum starts with one input's variance; elsewhere plain He.
// Sample variances of thousands of weights, against the formula (sd of a sample variance of n
// normals is var * sqrt(2 / n): under 3% here, checked at 12%).
TEST_CASE("Fresh convolutions into a sum of k inputs are scaled by 1/sqrt(k)", "[weights]") {
  const Dna dna = parse_dna(R"({
    "format": "evo-dna/1", "learning_rate": 0.1, "input": "v0", "output": "v3",
    "vertices": [
      {"id": "v0", "activation": "linear"}, {"id": "v1", "activation": "bn_relu"},
      {"id": "v2", "activation": "linear"}, {"id": "v3", "activation": "linear"}],
    "edges": [
      {"id": "e4", "from": "v0", "to": "v1", "type": "conv", "skip": false, "depth_factor": 40.0,
       "filter": [3, 3], "stride_scale": 0},
      {"id": "e5", "from": "v1", "to": "v2", "type": "conv", "skip": false, "depth_factor": 1.0,
       "filter": [3, 3], "stride_scale": 0},
      {"id": "e6", "from": "v2", "to": "v3", "type": "conv", "skip": false, "depth_factor": 1.0,
       "filter": [3, 3], "stride_scale": 0},
      {"id": "e7", "from": "v0", "to": "v2", "type": "identity", "skip": true},
      {"id": "e8", "from": "v1", "to": "v3", "type": "identity", "skip": true},
      {"id": "e9", "from": "v0", "to": "v3", "type": "identity", "skip": true}]})",
                            "init scale");
  const CompiledDna plan = compile(dna, 8, 8, 2, 10);
  Context ctx(Device::cpu(), test::rng()());
  const Weights w = init_weights(plan, ctx);
  // e4 feeds v1 (1 input), e5 feeds v2 (2: e5 and the skip e7), e6 feeds v3 (3).
  const std::pair<const char*, int> cases[] = {{"e4", 1}, {"e5", 2}, {"e6", 3}};
  for (auto [key, k] : cases) {
    const ParamInfo* p = plan.find_param(key);
    REQUIRE(p);
    const std::vector<float> v = w.at(key).to_host();
    const double fan_in = double(p->elements()) / double(p->shape[0]);
    double sum = 0, sq = 0;
    for (float x : v) sum += x, sq += double(x) * x;
    const double mean = sum / double(v.size()), var = sq / double(v.size()) - mean * mean;
    INFO(key << ": " << v.size() << " weights, variance " << var << ", k " << k);
    CHECK(var == Approx(2.0 / (fan_in * k)).epsilon(0.12));
  }
}
