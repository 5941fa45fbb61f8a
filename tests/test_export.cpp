// Tests of `evo export` (src/export/): every reference DNA and randomly evolved ones (odd filters,
// strides, mismatched skips), trained a few steps on synthetic images, exported to ONNX and to
// PyTorch; tests/export_check.py then has onnx.checker, ONNX Runtime and PyTorch judge the files
// against evo's own inference logits. Also bad input (weights of another DNA, a wrong
// standardisation, an unwritable path: a clear error and no file left) and the safetensors layout.
// The Python references are installed by tools/test.sh; under it (EVO_REQUIRE_REFERENCES=1) or
// CI a missing one fails the test rather than skipping it.
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "evo/export.h"
#include "evo/mutation.h"
#include "evo/train.h"
#include "support.h"

using namespace evo;
namespace fs = std::filesystem;

namespace {

std::string source_path(const std::string& rel) { return std::string(EVO_SOURCE_DIR) + "/" + rel; }

using test::references_required;
using test::shell;

// The Python with onnx, onnxruntime and torch: $EVO_TEST_PYTHON (tools/test.sh's venv), else the
// system's.
std::string python() {
  if (const char* p = std::getenv("EVO_TEST_PYTHON")) return p;
  return "/usr/bin/python3";
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_floats(const fs::path& p, const std::vector<float>& v) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  REQUIRE(f.good());
}

// Synthetic images whose class shows in their brightness, so a few steps of training move every
// weight (and the batch-norm running statistics away from 0 and 1).
Dataset synthetic(int h, int w, int c, int classes) {
  Dataset data;
  data.name = "synthetic";
  data.classes = classes;
  for (int k = 0; k < classes; ++k) data.class_names.push_back("class " + std::to_string(k));
  auto make = [&](int n) {
    ImageSet s;
    s.n = n;
    s.h = h;
    s.w = w;
    s.c = c;
    for (int i = 0; i < n; ++i) {
      const int label = int(test::rng()() % uint64_t(classes));
      s.labels.push_back(label);
      for (int j = 0; j < h * w * c; ++j)
        s.pixels.push_back(uint8_t((test::rng()() % 128) + uint64_t(label * 127 / classes)));
    }
    return s;
  };
  data.train = make(200);
  data.val = make(10);
  data.test = make(10);
  channel_stats(data.train, data.mean, data.std);
  return data;
}

struct Case {
  std::string name;
  Dna dna;
  int h, w, c, classes;
};

// Many mutations from the initial individual, structural ones favoured, so the DNA has odd
// filters, strides and skips between vertices of different shapes.
Dna evolve(std::mt19937_64& rng, int steps, int input_channels) {
  const std::vector<Mutation> favoured = {
      Mutation::InsertConvolution, Mutation::InsertConvolution, Mutation::AlterStride,
      Mutation::AlterNumberOfChannels, Mutation::FilterSize, Mutation::AddSkip, Mutation::AddSkip,
      Mutation::InsertOneToOne, Mutation::RemoveConvolution, Mutation::RemoveSkip};
  Dna dna = initial_dna();
  for (int s = 0; s < steps; ++s) {
    const Mutation m = favoured[rng() % favoured.size()];
    if (!applicable(dna, m, input_channels)) continue;
    Dna child = apply_mutation(dna, m, rng, input_channels).child;
    // Stay small, so training and the references are quick.
    if (compile(child, 32, 32, input_channels, 10).param_count > 60000) continue;
    dna = std::move(child);
  }
  return dna;
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const char* name : {"initial", "four_conv", "skips"})
    cases.push_back({name, load_dna(source_path("data/dna/" + std::string(name) + ".json")), 28,
                     28, 1, 10});
  for (const auto& entry : fs::directory_iterator(source_path("data/dna/evolved")))
    if (entry.path().extension() == ".json")
      cases.push_back({"evolved-" + entry.path().stem().string(), load_dna(entry.path()), 28, 28,
                       1, 10});
  // Random ones: seeded from Catch's seed (printed at start), on three input shapes, one odd so
  // nearest resizes have ratios like 13 -> 7 -> 4.
  std::mt19937_64 rng(test::rng()());
  const int shapes[3][3] = {{28, 28, 1}, {32, 32, 3}, {13, 11, 2}};
  for (int k = 0; k < 9; ++k) {
    const int* s = shapes[k % 3];
    cases.push_back({"random-" + std::to_string(k), evolve(rng, 40 + 10 * k, s[2]), s[0], s[1],
                     s[2], k % 3 == 2 ? 7 : 10});
  }
  return cases;
}

// A case's net trained a few steps, the images export_check.py runs it on (NCHW, pixel / 255)
// and evo's own inference logits on them.
struct Trained {
  CompiledDna plan;
  Weights weights;
  Dataset data;
  int n = 0;
  std::vector<float> nchw, logits;
};

// On `data` when given (an ensemble's members share theirs), else on fresh synthetic images.
Trained train_case(const Case& cs, const Dataset* data_in = nullptr) {
  Trained out;
  out.plan = compile(cs.dna, cs.h, cs.w, cs.c, cs.classes);
  out.data = data_in ? *data_in : synthetic(cs.h, cs.w, cs.c, cs.classes);
  const CompiledDna& plan = out.plan;
  const Dataset& data = out.data;
  const DeviceDataset dev = DeviceDataset::upload(data, Device::cpu());
  Context ctx(Device::cpu(), test::rng()());
  Weights& weights = out.weights;
  weights = init_weights(plan, ctx);
  const int n = out.n = 6;
  Model model(plan, 50, ctx);
  model.bind(weights);
  TrainOptions opts;
  opts.steps = 15;
  opts.set_augment(false);
  opts.check_every = 5;
  // A random evolved net can be a long chain of convolutions without batch norm or ReLU whose loss
  // diverges at the DNA's rate (one did in a run of the suite: NaN at step 10 at 0.05). This is a
  // test of the export, not of training: such a net starts again from fresh weights at a fifth of
  // the rate (the random-4 case of --rng-seed 2260116045 trains at 0.01).
  float lr = float(std::min(cs.dna.learning_rate, 0.05));
  TrainResult tr = train_model(model, dev, ctx, opts, lr);
  for (int attempt = 1; tr.failed && attempt < 4; ++attempt) {
    WARN(cs.name << ": " << tr.failure << "; training again at a fifth of the rate");
    lr /= 5;
    weights = init_weights(plan, ctx);
    model.bind(weights);
    tr = train_model(model, dev, ctx, opts, lr);
  }
  INFO(tr.failure);
  REQUIRE_FALSE(tr.failed);

  // evo's inference logits, on the input standardised as its data upload does it.
  std::vector<float>& nchw = out.nchw;
  nchw.assign(std::size_t(n) * plan.input.elements(), 0.0f);
  float* x = model.input();
  const ImageSet& imgs = data.test;
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < cs.h; ++y)
      for (int xx = 0; xx < cs.w; ++xx)
        for (int ch = 0; ch < cs.c; ++ch) {
          const uint8_t p = imgs.image(i)[(y * cs.w + xx) * cs.c + ch];
          const float mean = data.mean[std::size_t(ch)] / 255.0f;
          const float inv = 255.0f / std::max(data.std[std::size_t(ch)], 1e-3f);
          x[((int64_t(i) * cs.h + y) * cs.w + xx) * cs.c + ch] = (float(p) / 255.0f - mean) * inv;
          nchw[std::size_t(((int64_t(i) * cs.c + ch) * cs.h + y) * cs.w + xx)] = float(p) / 255.0f;
        }
  model.forward(n, false);
  ctx.synchronize();
  out.logits.assign(model.logits(), model.logits() + n * cs.classes);
  return out;
}

// The images and the logits export_check.py compares the exported files with, and case.json.
void write_case(const fs::path& dir, const std::string& id, const Case& cs, const Trained& t,
                const std::vector<float>& logits) {
  write_floats(dir / "images.bin", t.nchw);
  write_floats(dir / "logits.bin", logits);
  std::ofstream(dir / "case.json") << nlohmann::json{{"id", id},         {"n", t.n},
                                                      {"c", cs.c},       {"h", cs.h},
                                                      {"w", cs.w},       {"classes", cs.classes}}
                                          .dump();
}

// Trains `cs` a few steps, exports both formats into `dir`, and writes the images and evo's
// logits on them for export_check.py.
void export_case(const Case& cs, const fs::path& dir) {
  const Trained t = train_case(cs);
  fs::create_directories(dir);
  const ExportInfo info{cs.name, t.data.name, t.data.mean, t.data.std, t.data.class_names};
  export_onnx(t.plan, t.weights, info, (dir / "model.onnx").string());
  export_pytorch(t.plan, t.weights, info, (dir / "model.py").string(),
                 (dir / "model.safetensors").string());
  write_case(dir, cs.name, cs, t, t.logits);
}

// The ensemble of `members` (trained on the same data, run on the same images) exported into `dir`, with its logits computed here in double from each member's own
// evo logits: log of the mean of their softmax, the contract of export.h.
void export_ensemble_case(const Case& shape, const std::vector<const Trained*>& members,
                          const fs::path& dir) {
  fs::create_directories(dir);
  const Trained& first = *members[0];
  const int n = first.n, k = shape.classes;
  std::vector<double> mean_p(std::size_t(n) * k, 0.0);
  for (const Trained* m : members)
    for (int i = 0; i < n; ++i) {
      const float* z = m->logits.data() + std::size_t(i) * k;
      double zmax = z[0], total = 0;
      for (int c = 1; c < k; ++c) zmax = std::max(zmax, double(z[c]));
      for (int c = 0; c < k; ++c) total += std::exp(double(z[c]) - zmax);
      for (int c = 0; c < k; ++c)
        mean_p[std::size_t(i) * k + c] += std::exp(double(z[c]) - zmax) / total / members.size();
    }
  std::vector<float> logits(mean_p.size());
  for (std::size_t i = 0; i < mean_p.size(); ++i) logits[i] = float(std::log(mean_p[i]));
  std::vector<ExportNet> nets;
  for (std::size_t j = 0; j < members.size(); ++j) {
    REQUIRE(members[j]->nchw == first.nchw);  // the same images, or the case means nothing
    nets.push_back({&members[j]->plan, &members[j]->weights, "member" + std::to_string(j)});
  }
  const ExportInfo info{"ensemble", first.data.name, first.data.mean, first.data.std,
                        first.data.class_names};
  export_onnx(nets, info, (dir / "model.onnx").string());
  export_pytorch(nets, info, (dir / "model.py").string(), (dir / "model.safetensors").string());
  write_case(dir, "ensemble", shape, first, logits);
}

using test::run_evo;
using test::Run;

// The last line of a command's output that starts with '{', parsed.
nlohmann::json last_json(const std::string& output) {
  const std::size_t at = output.rfind("\n{");
  return nlohmann::json::parse(at == std::string::npos ? output : output.substr(at + 1));
}

fs::path temp_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("evo_export_" + tag + "_" +
                                                  std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("exported ONNX and PyTorch models give evo's logits (ONNX Runtime, PyTorch)",
          "[export][onnx][torch]") {
  REQUIRE(onnx_export_available());
  const std::string py = python();
  const bool have_refs =
      shell("'" + py + "' -c 'import onnx, onnxruntime, torch, numpy' > /dev/null 2>&1") == 0;
  if (!have_refs) {
    if (references_required())
      FAIL("onnx, onnxruntime or torch missing for " + py +
           ": tools/test.sh installs them (a venv in build/pyenv)");
    WARN("onnx/onnxruntime/torch missing for " + py + ": only the export itself is tested");
  }
  const fs::path root = temp_dir("cases");
  const std::vector<Case> cases = all_cases();
  int convs = 0, skips = 0, resized = 0, strided = 0, odd = 0;
  for (const Case& cs : cases) {
    INFO("case " << cs.name << ": " << to_json(cs.dna));
    export_case(cs, root / cs.name);
    const CompiledDna plan = compile(cs.dna, cs.h, cs.w, cs.c, cs.classes);
    for (const EdgePlan& e : plan.edges) {
      convs += e.type == EdgeType::Conv;
      skips += e.skip;
      resized += e.resizes_space() || e.resizes_channels();
      strided += e.stride > 1;
      odd += e.type == EdgeType::Conv && e.kh != e.kw;
    }
  }
  // An ensemble (a search's final answer) of three different architectures trained on the same
  // data (the first three cases: initial, four_conv, skips, all 28x28x1 into 10 classes).
  {
    const Dataset shared = synthetic(28, 28, 1, 10);
    std::vector<Trained> members;
    for (int k = 0; k < 3; ++k) members.push_back(train_case(cases[std::size_t(k)], &shared));
    export_ensemble_case(cases[0], {&members[0], &members[1], &members[2]}, root / "ensemble");
  }
  std::printf("export: %zu DNAs, %d convolutions (%d strided, %d with KH != KW), %d skips, %d "
              "reshaped edges\n",
              cases.size(), convs, strided, odd, skips, resized);
  // The random DNAs must cover what the exporter has to get right.
  CHECK(strided > 0);
  CHECK(resized > 0);
  CHECK(skips > 0);
  if (!have_refs) return;
  const std::string out = (root / "report.json").string();
  const int rc = shell("'" + py + "' '" + source_path("tests/export_check.py") + "' '" +
                       root.string() + "' > '" + out + "'");
  const std::string report = read_all(out);
  std::printf("export_check.py: %s", report.c_str());
  REQUIRE(rc == 0);
  const nlohmann::json j = nlohmann::json::parse(report);
  CHECK(j["cases"].get<int>() == int(cases.size()) + 1);  // and the ensemble
  CHECK(j["max_onnx"].get<double>() <= 1e-4);
  CHECK(j["max_torch"].get<double>() <= 1e-4);
  fs::remove_all(root);
}

TEST_CASE("export refuses weights of another DNA and leaves no file", "[export]") {
  const Dna a = load_dna(source_path("data/dna/four_conv.json"));
  const Dna b = load_dna(source_path("data/dna/skips.json"));
  const CompiledDna pa = compile(a, 28, 28, 1, 10), pb = compile(b, 28, 28, 1, 10);
  Context ctx(Device::cpu(), test::rng()());
  const Weights wb = init_weights(pb, ctx);
  Weights wa = init_weights(pa, ctx);
  const ExportInfo info{"four_conv", "fashion-mnist", {72.9f}, {90.0f}, {}};
  const fs::path dir = temp_dir("bad");
  const auto files = [&] { return std::distance(fs::directory_iterator(dir), {}); };

  // Another DNA's weights: a missing tensor, named.
  CHECK_THROWS_WITH(export_onnx(pa, wb, info, (dir / "m.onnx").string()),
                    Catch::Contains("no tensor") && Catch::Contains("another DNA"));
  CHECK_THROWS_AS(export_pytorch(pa, wb, info, (dir / "m.py").string(),
                                 (dir / "m.safetensors").string()),
                  ExportError);
  // One tensor of another shape.
  Weights wrong = wa;
  const std::string key = pa.params.front().key;
  wrong.tensors[key] = Tensor::zeros({1, 1, 1, 1}, Device::cpu());
  CHECK_THROWS_WITH(export_onnx(pa, wrong, info, (dir / "m.onnx").string()),
                    Catch::Contains(key) && Catch::Contains("shape"));
  // A diverged net.
  Weights nan = wa;
  std::vector<float> v = wa.at(key).to_host();
  v[v.size() / 2] = std::nanf("");
  nan.tensors[key] = Tensor::from_host(v, wa.at(key).shape(), Device::cpu());
  CHECK_THROWS_WITH(export_pytorch(pa, nan, info, (dir / "m.py").string(),
                                   (dir / "m.safetensors").string()),
                    Catch::Contains("non-finite"));
  // Standardisation for three channels on a one-channel net.
  const ExportInfo rgb{"x", "cifar10", {1, 2, 3}, {1, 2, 3}, {}};
  CHECK_THROWS_WITH(export_onnx(pa, wa, rgb, (dir / "m.onnx").string()),
                    Catch::Contains("1-channel"));
  CHECK(files() == 0);

  // An unwritable path: the error names it, and nothing is left behind (no temporary file).
  const fs::path missing = dir / "no-such-folder" / "m.onnx";
  CHECK_THROWS_WITH(export_onnx(pa, wa, info, missing.string()),
                    Catch::Contains(missing.string()));
  const fs::path ro = dir / "read-only";
  fs::create_directories(ro);
  fs::create_directories(ro / "m.py");  // a folder where the Python file should go
  CHECK_THROWS(export_pytorch(pa, wa, info, (ro / "m.py").string(),
                              (ro / "m.safetensors").string()));
  CHECK_FALSE(fs::exists(ro / "m.safetensors"));  // the weights written first were taken back
  CHECK(std::distance(fs::directory_iterator(ro), {}) == 1);
  CHECK(files() == 1);
  fs::remove_all(dir);
}

TEST_CASE("safetensors layout: header, aligned offsets covering the data, values", "[export]") {
  std::vector<NamedTensor> t;
  t.push_back({"b.weight", {2, 3}, {1, 2, 3, 4, 5, 6}});
  t.push_back({"a", {}, {7.5f}});
  t.push_back(NamedTensor::int64("a.count", {}, {-3}));
  const std::string bytes = safetensors_bytes(t, {{"format", "pt"}});
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[std::size_t(i)]);
  REQUIRE(n % 8 == 0);
  REQUIRE(8 + n <= bytes.size());
  const nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  CHECK(h["__metadata__"]["format"] == "pt");
  CHECK(h["b.weight"]["dtype"] == "F32");
  CHECK(h["b.weight"]["shape"] == nlohmann::json({2, 3}));
  CHECK(h["a.count"]["dtype"] == "I64");
  // The int64 first (aligned at 0), then the floats by name; together they cover the data.
  CHECK(h["a.count"]["data_offsets"] == nlohmann::json({0, 8}));
  CHECK(h["a"]["data_offsets"] == nlohmann::json({8, 12}));
  CHECK(h["b.weight"]["data_offsets"] == nlohmann::json({12, 36}));
  CHECK(bytes.size() == 8 + n + 36);
  const char* data = bytes.data() + 8 + n;
  int64_t i64;
  std::memcpy(&i64, data, 8);
  CHECK(i64 == -3);
  float f[7];
  std::memcpy(f, data + 8, sizeof f);
  CHECK(f[0] == 7.5f);
  for (int i = 0; i < 6; ++i) CHECK(f[i + 1] == float(i + 1));
  // A tensor whose values do not fill its shape.
  CHECK_THROWS_AS(safetensors_bytes({NamedTensor("x", {2, 2}, {1, 2, 3})}, {}), ExportError);
}

// The command from the outside, on the real data pipeline: a net trained by `evo train`, exported
// by `evo export` in both formats, classifies Fashion-MNIST's 10,000 test images in ONNX Runtime
// and in PyTorch as `evo eval` does; a run folder exports its best individual (the one `evo best`
// names); mistakes are usage errors that leave no file.
TEST_CASE("evo export: the exported nets score evo eval's test accuracy; run folders; errors",
          "[export][cli]") {
  if (!test::have_fashion_mnist()) {
    if (references_required()) FAIL("Fashion-MNIST is missing (tools/setup.sh installs it)");
    WARN("Fashion-MNIST is not installed: skipped");
    return;
  }
  const std::string py = python();
  const bool have_refs =
      shell("'" + py + "' -c 'import onnxruntime, torch, numpy' > /dev/null 2>&1") == 0;
  if (!have_refs && references_required())
    FAIL("onnxruntime or torch missing for " + py + ": tools/test.sh installs them");
  const fs::path dir = temp_dir("cli");
  const std::string d = dir.string();
  const std::string dna = source_path("data/dna/skips.json");
  Run r = run_evo("train --dna '" + dna + "' --steps 60 --max-train 3000 --json --out '" + d +
                  "/t'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const std::string weights = d + "/t/weights.evow";
  r = run_evo("eval --dna '" + dna + "' --weights '" + weights + "' --split test --json");
  REQUIRE(r.code == 0);
  const int evo_correct = last_json(r.output)["correct"];

  r = run_evo("export '" + dna + "' --weights '" + weights + "' -o '" + d + "/m.onnx' --json");
  REQUIRE(r.code == 0);
  nlohmann::json j = last_json(r.output);
  CHECK(j["id"] == "skips");
  CHECK(j["files"] == nlohmann::json({d + "/m.onnx"}));
  r = run_evo("export '" + dna + "' --weights '" + weights + "' --format pytorch -o '" + d +
              "/skips_net.py'");
  REQUIRE(r.code == 0);
  CHECK(r.output.find("skips_net.safetensors") != std::string::npos);
  REQUIRE(fs::exists(d + "/skips_net.safetensors"));

  if (have_refs) {
    const std::string out = d + "/check.json";
    REQUIRE(shell("'" + py + "' '" + source_path("tests/export_cli_check.py") + "' '" +
                  kFashionMnistDefaultDir + "' '" + d + "/m.onnx' '" + d + "/skips_net.py' '" +
                  d + "/skips_net.safetensors' > '" + out + "'") == 0);
    const nlohmann::json c = nlohmann::json::parse(read_all(out));
    std::printf("evo eval: %d of 10000 test images right; ONNX Runtime %d, PyTorch %d (the two "
                "disagree on %d)\n",
                evo_correct, c["onnx_correct"].get<int>(), c["torch_correct"].get<int>(),
                c["disagree"].get<int>());
    CHECK(c["images"] == 10000);
    // Logits agree to ~1e-6, so only an exact tie between two classes could flip a prediction.
    CHECK(std::abs(c["onnx_correct"].get<int>() - evo_correct) <= 2);
    CHECK(std::abs(c["torch_correct"].get<int>() - evo_correct) <= 2);
  }

  // A run folder: by default its best individual, the one `evo best` names.
  const std::string run = d + "/run";
  r = run_evo("search --gpus none --run-dir '" + run + "' --population 3 --max-children 2 "
              "--max-train 500 --max-val 200 --steps 10 --workers 1 --threads 1 --json");
  REQUIRE(r.code == 0);
  r = run_evo("best '" + run + "' --json");
  REQUIRE(r.code == 0);
  const std::string best_id = last_json(r.output)["best_id"];
  r = run_evo("export '" + run + "' --format onnx -o '" + d + "/best.onnx' --json");
  REQUIRE(r.code == 0);
  j = last_json(r.output);
  CHECK(j["id"] == best_id);
  CHECK(fs::exists(d + "/best.onnx"));
  // The standardisation is the one the children trained with: that of the run's capped training
  // set (run.json records the cap), recomputed here by the data loader from the run's settings.
  const nlohmann::json settings = nlohmann::json::parse(read_all(run + "/run.json"))["settings"];
  REQUIRE(settings["max_train"] == 500);
  DataOptions dopts;
  dopts.seed = settings["seed"];
  dopts.val_fraction = settings["val_fraction"];
  dopts.max_train = 500;
  const Dataset capped = load_dataset("fashion-mnist", dopts);
  CHECK(j["mean"].get<std::vector<float>>() == capped.mean);
  CHECK(j["std"].get<std::vector<float>>() == capped.std);

  // A run whose search had a final phase: its final model is the run's answer, and both evo best
  // and evo export take it. The test writes that final/ itself, with the net trained above (a
  // DNA the search never made): RUN/final/1-fin/ and retrain.json as the phase writes them.
  CHECK(j["model"] == "search");
  fs::create_directories(run + "/final/1-fin");
  fs::copy_file(dna, run + "/final/1-fin/dna.json");
  fs::copy_file(weights, run + "/final/1-fin/weights.evow");
  std::ofstream(run + "/final/retrain.json")
      << R"({"phase": "search", "seconds_each": 12.5, "individuals": [{"id": "fin", )"
      << R"("folder": "1-fin", "val_after": 0.5, "seconds": 12.5, "failed": false}]})";
  r = run_evo("export '" + run + "' -o '" + d + "/final.onnx' --json");
  INFO(r.output);
  REQUIRE(r.code == 0);
  j = last_json(r.output);
  CHECK(j["model"] == "final");
  CHECK(j["id"] == "fin");
  const CompiledDna skips = compile(load_dna(dna), 28, 28, 1, 10);
  CHECK(j["parameters"] == skips.param_count);
  CHECK(j["mean"].get<std::vector<float>>() == capped.mean);  // still the run's standardisation
  r = run_evo("export '" + run + "' --id " + best_id + " -o '" + d + "/again.onnx' --json");
  REQUIRE(r.code == 0);
  CHECK(last_json(r.output)["model"] == "search");
  // Without -o the PyTorch file is named so that Python can import it (an id is digits and
  // dashes, which `import` cannot take), in the current folder.
  {
    const fs::path cwd = fs::current_path();
    fs::current_path(dir);
    r = run_evo("export '" + run + "' --id " + best_id + " --format pytorch --json");
    fs::current_path(cwd);
    REQUIRE(r.code == 0);
    const std::string file = last_json(r.output)["files"][0];
    std::string module = file.substr(0, file.size() - 3);
    CHECK(file.size() > 3);
    CHECK(file.compare(file.size() - 3, 3, ".py") == 0);
    CHECK(module.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") ==
          std::string::npos);
    CHECK(!std::isdigit(static_cast<unsigned char>(module[0])));
    REQUIRE(fs::exists(dir / file));
    if (have_refs)
      CHECK(shell("cd '" + d + "' && '" + py + "' -c 'import " + module + "' > /dev/null 2>&1") == 0);
  }
  // evo best measures it afresh on the run's test images: what this test measures in-process.
  r = run_evo("best '" + run + "' --json");
  REQUIRE(r.code == 0);
  j = last_json(r.output);
  CHECK(j["final_id"] == "fin");
  CHECK(j["final_folder"] == "final/1-fin");
  CHECK(j["final_models"] == 1);
  CHECK(j["final_seconds"] == 12.5);
  {
    Context ctx(Device::cpu(), 1);
    const DeviceDataset dev = DeviceDataset::upload(capped, Device::cpu());
    Weights w = load_weights(weights, skips, Device::cpu());
    Model model(skips, kEvalBatch, ctx);
    model.bind(w);
    CHECK(j["final_test_accuracy"] == evaluate_model(model, dev, "test", ctx).accuracy());
  }
  r = run_evo("best '" + run + "'");
  CHECK(r.output.find("final model files " + run + "/final/1-fin/") != std::string::npos);

  // A final phase of two whose ensemble is the run's answer: evo export writes both members as
  // one model (ONNX Runtime and PyTorch then score the ensemble's accuracy, measured here
  // in-process), --single the final model alone, and evo best applies the rule
  // (ensemble_is_answer) to the run's validation set again.
  {
    const std::string dna2 = source_path("data/dna/four_conv.json");
    r = run_evo("train --dna '" + dna2 + "' --steps 60 --max-train 3000 --json --out '" + d +
                "/t2'");
    REQUIRE(r.code == 0);
    fs::create_directories(run + "/final/2-fin2");
    fs::copy_file(dna2, run + "/final/2-fin2/dna.json");
    fs::copy_file(d + "/t2/weights.evow", run + "/final/2-fin2/weights.evow");
    Context ctx(Device::cpu(), 1);
    const DeviceDataset dev = DeviceDataset::upload(capped, Device::cpu());
    const CompiledDna four = compile(load_dna(dna2), 28, 28, 1, 10);
    double val[2], test[2];
    std::vector<double> sum_val, sum_test;
    int k = 0;
    for (const auto& [plan, file] : {std::pair{&skips, weights},
                                     std::pair{&four, d + "/t2/weights.evow"}}) {
      Weights w = load_weights(file, *plan, Device::cpu());
      Model model(*plan, kEvalBatch, ctx);
      model.bind(w);
      const EvalResult v = evaluate_model(model, dev, "val", ctx, true);
      const EvalResult t = evaluate_model(model, dev, "test", ctx, true);
      val[k] = v.accuracy();
      test[k++] = t.accuracy();
      sum_val.resize(v.probabilities.size());
      sum_test.resize(t.probabilities.size());
      for (std::size_t i = 0; i < sum_val.size(); ++i) sum_val[i] += v.probabilities[i];
      for (std::size_t i = 0; i < sum_test.size(); ++i) sum_test[i] += t.probabilities[i];
    }
    const double ens_val = ensemble_accuracy(sum_val, capped.val.labels, 10);
    const double ens_test = ensemble_accuracy(sum_test, capped.test.labels, 10);
    const int best = val[1] > val[0] ? 1 : 0;
    // The phase decides the answer (test_search checks its rule); evo export and evo best take
    // what retrain.json says, here the ensemble whatever these two weak nets score.
    std::ofstream(run + "/final/retrain.json", std::ios::trunc)
        << nlohmann::json{{"phase", "search"},
                          {"ensemble_size", 2},
                          {"answer", "ensemble"},
                          {"ensemble_val", ens_val},
                          {"individuals",
                           {{{"id", "fin"}, {"folder", "1-fin"}, {"val_after", val[0]},
                             {"seconds", 12.5}},
                            {{"id", "fin2"}, {"folder", "2-fin2"}, {"val_after", val[1]},
                             {"seconds", 11}}}}}
               .dump();
    r = run_evo("export '" + run + "' -o '" + d + "/ens.onnx' --json");
    INFO(r.output);
    REQUIRE(r.code == 0);
    j = last_json(r.output);
    CHECK(j["model"] == "ensemble");
    CHECK(j["members"] == nlohmann::json({"fin", "fin2"}));
    CHECK(j["parameters"] == skips.param_count + four.param_count);
    r = run_evo("export '" + run + "' --format pytorch -o '" + d + "/ens_net.py'");
    REQUIRE(r.code == 0);
    CHECK(r.output.find("final ensemble of 2") != std::string::npos);
    r = run_evo("export '" + run + "' --single -o '" + d + "/single.onnx' --json");
    REQUIRE(r.code == 0);
    CHECK(last_json(r.output)["model"] == "final");
    CHECK(last_json(r.output)["id"] == (best ? "fin2" : "fin"));
    r = run_evo("best '" + run + "' --json");
    REQUIRE(r.code == 0);
    j = last_json(r.output);
    CHECK(j["final_ensemble_val_accuracy"] == ens_val);
    CHECK(j["final_ensemble_test_accuracy"] == ens_test);
    CHECK(j["answer"] == "ensemble");
    CHECK(j["answer_test_accuracy"] == ens_test);
    CHECK(j["final_test_accuracy"] == test[best]);
    std::printf("final ensemble of skips and four_conv: validation %.4f (members %.4f, %.4f), "
                "test %.4f; answer %s\n",
                ens_val, val[0], val[1], ens_test, j["answer"].get<std::string>().c_str());
    if (have_refs) {
      const std::string out = d + "/check_ens.json";
      REQUIRE(shell("'" + py + "' '" + source_path("tests/export_cli_check.py") + "' '" +
                    kFashionMnistDefaultDir + "' '" + d + "/ens.onnx' '" + d + "/ens_net.py' '" +
                    d + "/ens_net.safetensors' > '" + out + "'") == 0);
      const nlohmann::json c = nlohmann::json::parse(read_all(out));
      const int expected = int(std::lround(ens_test * 10000));
      std::printf("ensemble: evo %d of 10000 test images right; ONNX Runtime %d, PyTorch %d\n",
                  expected, c["onnx_correct"].get<int>(), c["torch_correct"].get<int>());
      CHECK(std::abs(c["onnx_correct"].get<int>() - expected) <= 2);
      CHECK(std::abs(c["torch_correct"].get<int>() - expected) <= 2);
    }
    r = run_evo("export '" + run + "' --single --id fin -o '" + d + "/x.onnx'");
    CHECK(r.code == 2);
  }
  // A damaged summary: evo best names it and still reports the search; evo export refuses.
  std::ofstream(run + "/final/retrain.json", std::ios::trunc) << R"({"phase": "search"})";
  r = run_evo("best '" + run + "' --json");
  CHECK(r.code == 0);
  CHECK(r.output.find("retrain.json") != std::string::npos);
  CHECK(last_json(r.output)["final_id"] == "");
  r = run_evo("export '" + run + "' -o '" + d + "/x.onnx'");
  CHECK(r.code == 1);
  CHECK(r.output.find("retrain.json") != std::string::npos);

  // Mistakes: exit 2 (usage) or 1, a message that says what, and no file.
  r = run_evo("export '" + dna + "' -o '" + d + "/x.onnx'");
  CHECK(r.code == 2);
  CHECK(r.output.find("--weights") != std::string::npos);
  r = run_evo("export '" + run + "' --id nobody -o '" + d + "/x.onnx'");
  CHECK(r.code == 1);
  CHECK(r.output.find("nobody") != std::string::npos);
  r = run_evo("export '" + source_path("data/dna/four_conv.json") + "' --weights '" + weights +
              "' -o '" + d + "/x.onnx'");
  CHECK(r.code == 1);  // weights of another DNA
  CHECK(r.output.find("weights") != std::string::npos);
  r = run_evo("export '" + dna + "' --weights '" + weights + "' -o '" + d + "/none/x.onnx'");
  CHECK(r.code == 1);
  CHECK(r.output.find(d + "/none/x.onnx") != std::string::npos);
  r = run_evo("export '" + dna + "' --weights '" + weights + "' --format tflite");
  CHECK(r.code == 2);
  CHECK_FALSE(fs::exists(d + "/x.onnx"));
  for (const auto& e : fs::directory_iterator(dir))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  fs::remove_all(dir);
}
