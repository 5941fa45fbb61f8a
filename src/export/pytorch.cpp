// `evo export --format pytorch`: a DNA as a readable, self-contained Python file defining
// `EvoNet(torch.nn.Module)` (one line of forward() per edge, commented with evo's ids and shapes),
// and its weights as a state_dict in a safetensors file. Not a general code generator: it writes
// the ops evo's DNAs use, in the layout export.h describes (the same function as the ONNX export).
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "evo/export.h"
#include "evo/io.h"
#include "evo/ops.h"
#include "export/common.h"

namespace evo {

namespace {

// A Python string literal for any text: JSON's string syntax is a subset of Python's.
std::string py_str(const std::string& s) { return nlohmann::json(s).dump(); }

// An id usable as an attribute name after a prefix ("conv_e5"): ids are [A-Za-z0-9_-], and only
// '-' is not allowed in Python names, so such modules are reached with getattr.
std::string module_ref(const std::string& prefix, const std::string& id) {
  const std::string name = prefix + id;
  if (id.find('-') == std::string::npos) return "self." + name;
  return "getattr(self, " + py_str(name) + ")";
}

std::string file_name(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The text of `class NAME(nn.Module)` for one net: its modules, then forward() with one line per
// edge. Vertex values are v<k>, k the vertex's position in topological order.
std::string net_class(const CompiledDna& plan, const std::string& name) {
  std::ostringstream py;
  const int c = plan.input.c;
  py << "class " << name << "(nn.Module):\n"
     << "    def __init__(self):\n"
     << "        super().__init__()\n";
  py << "        self.register_buffer(\"mean\", torch.zeros(1, " << c << ", 1, 1))\n"
     << "        self.register_buffer(\"inv_std\", torch.ones(1, " << c << ", 1, 1))\n";
  char buf[256];
  for (const EdgePlan& e : plan.edges) {
    if (e.type != EdgeType::Conv) continue;
    std::snprintf(buf, sizeof buf,
                  "        self.add_module(%s, nn.Conv2d(%d, %d, (%d, %d), stride=%d, "
                  "padding=(%d, %d), bias=False))\n",
                  py_str("conv_" + e.id).c_str(), e.in.c, e.out.c, e.kh, e.kw, e.stride,
                  e.kh / 2, e.kw / 2);
    py << buf;
  }
  for (const VertexPlan& v : plan.vertices) {
    if (v.activation != Activation::BnRelu) continue;
    // momentum 0.1 in PyTorch's convention is evo's kBatchNormMomentum 0.9 (running = 0.9 *
    // running + 0.1 * batch); both keep the unbiased variance.
    std::snprintf(buf, sizeof buf,
                  "        self.add_module(%s, nn.BatchNorm2d(%d, eps=%.9g, momentum=%.9g))\n",
                  py_str("bn_" + v.id).c_str(), v.shape.c, double(kBatchNormEps),
                  1.0 - double(kBatchNormMomentum));
    py << buf;
  }
  py << "        self.fc = nn.Linear(" << plan.output().shape.c << ", " << plan.classes << ")\n\n"
     << "    def forward(self, image):\n"
     << "        v0 = (image - self.mean) * self.inv_std  # " << plan.vertices[0].id << ": "
     << plan.vertices[0].shape.str() << "\n";
  for (std::size_t vi = 1; vi < plan.vertices.size(); ++vi) {
    const VertexPlan& v = plan.vertices[vi];
    const std::string var = "v" + std::to_string(vi);
    bool first = true;
    for (int ei : v.in_edges) {
      const EdgePlan& e = plan.edges[std::size_t(ei)];
      std::string r = "v" + std::to_string(e.from);
      std::string note = e.id;
      if (e.type == EdgeType::Conv) {
        r = module_ref("conv_", e.id) + "(" + r + ")";
        note += ": " + std::to_string(e.kh) + "x" + std::to_string(e.kw) + " conv, stride " +
                std::to_string(e.stride);
      } else {
        note += e.skip ? ": skip" : ": identity";
      }
      if (e.out != e.reshaped)
        r = "fit(" + r + ", " + std::to_string(e.reshaped.h) + ", " +
            std::to_string(e.reshaped.w) + ", " + std::to_string(e.reshaped.c) + ")";
      py << "        " << var << (first ? " = " : " = " + var + " + ") << r << "  # " << note
         << "\n";
      first = false;
    }
    if (v.activation == Activation::BnRelu)
      py << "        " << var << " = F.relu(" << module_ref("bn_", v.id) << "(" << var
         << "))  # " << v.id << ": " << v.shape.str() << "\n";
    else
      py << "        # " << v.id << ": " << v.shape.str() << ", linear\n";
  }
  py << "        return self.fc(v" << plan.vertices.size() - 1 << ".mean(dim=(2, 3)))\n";
  return py.str();
}

// load(): the class with the exported weights, read without the safetensors package.
constexpr const char* kLoadMethod = R"(
    @classmethod
    def load(cls, path=None):
        """The net with the exported weights (path: the safetensors file; default WEIGHTS beside
        this file)."""
        if path is None:
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS)
        net = cls()
        net.load_state_dict(read_safetensors(path))
        return net
)";

// The Python source of `nets` (one: EvoNet is that net; several: EvoNet is their ensemble).
std::string python_source(const std::vector<ExportNet>& nets, const ExportInfo& info,
                          const std::string& module, const std::string& weights_name) {
  const CompiledDna& plan = *nets[0].plan;
  const bool ensemble = nets.size() > 1;
  std::ostringstream py;
  const std::string id = info.id.empty() ? std::string("net") : info.id;
  const int c = plan.input.c;
  py << "\"\"\"" << "EvoNet: "
     << (ensemble ? "an ensemble of " + std::to_string(nets.size()) + " networks (" + id +
                        ") found by evo's evolutionary search"
                  : "DNA " + id + ", a network found by evo's evolutionary search")
     << (info.dataset.empty() ? "" : ", trained on " + info.dataset) << ".\n\n"
     << "Written by `evo export --format pytorch` (evo " << EVO_VERSION
     << "). Needs PyTorch only. Load and run:\n\n"
     << "    from " << module << " import EvoNet\n"
     << "    net = EvoNet.load(\"" << weights_name << "\").eval()\n"
     << "    logits = net(images)   # images: float32 [N, " << c << ", " << plan.input.h << ", "
     << plan.input.w << "], pixel / 255\n\n"
     << "The input standardisation is inside the model (buffers `mean` and `inv_std`); the\n"
     << "output is the logits, one column per class of CLASSES (softmax for probabilities).\n";
  if (ensemble)
    py << "The members are EvoMember0, EvoMember1, ... (net.m0, net.m1, ...); the logits are the\n"
       << "log of the mean of their softmax, so a softmax of them is that mean.\n";
  py << "The weights file is safetensors: `safetensors.torch.load_file` reads it too.\n"
     << "\"\"\"\n"
     << "import json\nimport os\nimport struct\n\nimport torch\nimport torch.nn.functional as F\n"
     << "from torch import nn\n\n"
     << "INPUT_SHAPE = (" << c << ", " << plan.input.h << ", " << plan.input.w
     << ")  # channels, height, width\n"
     << "CLASSES = json.loads(" << py_str(nlohmann::json(exporting::class_names(plan, info)).dump())
     << ")\n";
  if (!ensemble) {
    py << "DNA = json.loads(" << py_str(to_json(plan.dna)) << ")\n";
  } else {
    nlohmann::json dnas = nlohmann::json::array();
    for (const ExportNet& n : nets) dnas.push_back(nlohmann::json::parse(to_json(n.plan->dna)));
    py << "DNAS = json.loads(" << py_str(dnas.dump()) << ")  # the members', in order\n";
  }
  py << "WEIGHTS = " << py_str(weights_name) << "  # the default, beside this file\n\n\n";
  py << R"(def read_safetensors(path):
    """The tensors of a safetensors file (F32 and I64, little-endian), without its package."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": torch.float32, "I64": torch.int64}[t["dtype"]]
        begin, end = t["data_offsets"]
        raw = bytearray(data[8 + n + begin:8 + n + end])
        tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(t["shape"])
    return tensors


def fit(x, h, w, c):
    """A skip brought to its vertex's shape as evo does: nearest resize (output row i reads input
    row floor(i * H / h), columns likewise), then channels truncated or zero-padded."""
    _, xc, xh, xw = x.shape
    if xh != h:
        x = x.index_select(2, torch.arange(h, device=x.device) * xh // h)
    if xw != w:
        x = x.index_select(3, torch.arange(w, device=x.device) * xw // w)
    if xc > c:
        x = x[:, :c]
    elif xc < c:
        x = F.pad(x, (0, 0, 0, 0, 0, c - xc))
    return x


)";
  if (!ensemble) {
    py << net_class(plan, "EvoNet") << kLoadMethod;
    return py.str();
  }
  for (std::size_t k = 0; k < nets.size(); ++k)
    py << net_class(*nets[k].plan, "EvoMember" + std::to_string(k)) << "\n\n";
  py << "class EvoNet(nn.Module):\n"
     << "    def __init__(self):\n"
     << "        super().__init__()\n";
  for (std::size_t k = 0; k < nets.size(); ++k)
    py << "        self.m" << k << " = EvoMember" << k << "()  # " << nets[k].id << "\n";
  py << "\n    def forward(self, image):\n"
     << "        p = torch.stack([F.softmax(m(image), dim=1) for m in (";
  for (std::size_t k = 0; k < nets.size(); ++k) py << "self.m" << k << ", ";
  py << ")]).mean(dim=0)\n"
     << "        return torch.log(p)\n"
     << kLoadMethod;
  return py.str();
}

// One net's state_dict, every key behind `prefix` ("" for a lone net, "m0." ... for a member).
void add_tensors(const CompiledDna& plan, const Weights& weights, const ExportInfo& info,
                 const std::string& prefix, std::vector<NamedTensor>& tensors) {
  const auto w = exporting::host_weights(plan, weights);
  std::vector<float> mean, inv_std;
  exporting::standardisation(plan, info, mean, inv_std);
  const int c = plan.input.c;
  tensors.push_back({prefix + "mean", {1, c, 1, 1}, mean});
  tensors.push_back({prefix + "inv_std", {1, c, 1, 1}, inv_std});
  for (const EdgePlan& e : plan.edges) {
    if (e.type != EdgeType::Conv) continue;
    exporting::HostTensor f = exporting::filter_to_oihw(w.at(e.id));
    tensors.push_back({prefix + "conv_" + e.id + ".weight", f.shape, std::move(f.values)});
  }
  for (const VertexPlan& v : plan.vertices) {
    if (v.activation != Activation::BnRelu) continue;
    const std::string m = prefix + "bn_" + v.id + ".";
    tensors.push_back({m + "weight", w.at(v.id + ".gamma").shape, w.at(v.id + ".gamma").values});
    tensors.push_back({m + "bias", w.at(v.id + ".beta").shape, w.at(v.id + ".beta").values});
    tensors.push_back({m + "running_mean", w.at(v.id + ".running_mean").shape,
                       w.at(v.id + ".running_mean").values});
    tensors.push_back({m + "running_var", w.at(v.id + ".running_var").shape,
                       w.at(v.id + ".running_var").values});
    // PyTorch counts batches only to average when momentum is None; ours is fixed.
    tensors.push_back(NamedTensor::int64(m + "num_batches_tracked", {}, {0}));
  }
  tensors.push_back({prefix + "fc.weight", w.at("fc.weight").shape, w.at("fc.weight").values});
  tensors.push_back({prefix + "fc.bias", w.at("fc.bias").shape, w.at("fc.bias").values});
}

}  // namespace

void export_pytorch(const CompiledDna& plan, const Weights& weights, const ExportInfo& info,
                    const std::string& py_path, const std::string& weights_path) {
  export_pytorch({ExportNet{&plan, &weights, info.id}}, info, py_path, weights_path);
}

void export_pytorch(const std::vector<ExportNet>& nets, const ExportInfo& info,
                    const std::string& py_path, const std::string& weights_path) {
  const CompiledDna& plan = exporting::check_members(nets);
  std::vector<NamedTensor> tensors;
  for (std::size_t k = 0; k < nets.size(); ++k)
    add_tensors(*nets[k].plan, *nets[k].weights, info,
                nets.size() > 1 ? "m" + std::to_string(k) + "." : "", tensors);
  std::string dna_text = to_json(plan.dna);
  if (nets.size() > 1) {
    nlohmann::json dnas = nlohmann::json::array();
    for (const ExportNet& n : nets) dnas.push_back(nlohmann::json::parse(to_json(n.plan->dna)));
    dna_text = dnas.dump();
  }

  const std::string weights_bytes =
      safetensors_bytes(tensors, {{"format", "pt"}, {"evo.id", info.id},
                                  {"evo.dataset", info.dataset},
                                  {nets.size() > 1 ? "evo.dnas" : "evo.dna", dna_text}});
  std::string module = file_name(py_path);
  if (module.size() > 3 && module.compare(module.size() - 3, 3, ".py") == 0)
    module.resize(module.size() - 3);
  const std::string source = python_source(nets, info, module, file_name(weights_path));
  // The weights first, so the Python file never names a weights file that is not there; and
  // when the Python file cannot be written, the weights just written go too (nothing half done).
  write_file_atomic(weights_path, weights_bytes, "PyTorch weights");
  try {
    write_file_atomic(py_path, source, "PyTorch model");
  } catch (...) {
    std::remove(weights_path.c_str());
    throw;
  }
}

}  // namespace evo
