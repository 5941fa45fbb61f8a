// `evo export --format onnx`: a DNA with its weights as an ONNX model (opset kOnnxOpset), built
// with the ONNX project's own protobuf classes (Debian's libonnx-dev) and checked with its
// onnx::checker before a byte is written. Not an ONNX importer, and not used by training.
//
// The graph (export.h has the contract): image -> Sub(mean) -> Mul(inv_std) is the input vertex;
// then per vertex in topological order the in-edges (Conv, or the source itself), skips reshaped
// by Gather (rows, then columns, integer indices) and Slice/Pad (channels), a Sum when there are
// several, BatchNormalization + Relu for bn_relu vertices; then GlobalAveragePool, Flatten, Gemm
// (transB) -> "logits", Softmax -> "probabilities". Names: initialisers carry evo's weight keys
// ("e5", "v3.gamma", "fc.weight"), a vertex's value its id, an edge's result "<id>.out". An
// ensemble (the final phase's answer) is its members side by side on the one standardised image,
// each name behind "m0.", "m1.", ..., then Mean of their softmax -> "probabilities", Log ->
// "logits".
#include "evo/export.h"

#include <nlohmann/json.hpp>

#include "evo/io.h"
#include "evo/ops.h"
#include "export/common.h"

#if EVO_HAVE_ONNX
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#endif

namespace evo {

bool onnx_export_available() { return EVO_HAVE_ONNX != 0; }

#if EVO_HAVE_ONNX

namespace {

using exporting::HostTensor;

class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}

  void initializer(const std::string& name, const std::vector<int64_t>& dims,
                   const std::vector<float>& values) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    // raw_data is little-endian float32, the layout of our host buffers on every machine we
    // build for (x86-64, aarch64).
    t->set_raw_data(values.data(), values.size() * sizeof(float));
  }
  void initializer_i64(const std::string& name, const std::vector<int64_t>& values) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(int64_t(values.size()));
    for (int64_t v : values) t->add_int64_data(v);
  }

  onnx::NodeProto* node(const std::string& op, const std::string& name,
                        const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const std::string& in : inputs) n->add_input(in);
    n->add_output(output);
    return n;
  }

  static void attr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr_f(onnx::NodeProto* n, const std::string& name, float v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

  // A float32 graph input or output [N, dims...] with a symbolic batch dimension.
  static void value_info(onnx::ValueInfoProto* v, const std::string& name,
                         const std::vector<int64_t>& dims, const std::string& doc) {
    v->set_name(name);
    v->set_doc_string(doc);
    onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    onnx::TensorShapeProto* s = t->mutable_shape();
    s->add_dim()->set_dim_param("N");
    for (int64_t d : dims) s->add_dim()->set_dim_value(d);
  }

 private:
  onnx::GraphProto* g_;
};

void metadata(onnx::ModelProto& m, const std::string& key, const std::string& value) {
  onnx::StringStringEntryProto* p = m.add_metadata_props();
  p->set_key(key);
  p->set_value(value);
}

// One net's nodes and initialisers, every name behind `prefix` ("" for a lone net, "m0." ... for
// an ensemble's members), reading the standardised image `input`; returns its logits' name.
std::string add_net(GraphBuilder& b, const CompiledDna& plan, const Weights& weights,
                    const std::string& prefix, const std::string& input,
                    const std::string& logits) {
  const auto w = exporting::host_weights(plan, weights);
  auto P = [&](const std::string& name) { return prefix + name; };
  // The value name of every vertex, by its index in plan.vertices.
  std::vector<std::string> value(plan.vertices.size());
  value[0] = input;
  for (std::size_t vi = 1; vi < plan.vertices.size(); ++vi) {
    const VertexPlan& v = plan.vertices[vi];
    std::vector<std::string> summands;
    for (int ei : v.in_edges) {
      const EdgePlan& e = plan.edges[std::size_t(ei)];
      const std::string id = P(e.id);
      std::string r = value[std::size_t(e.from)];
      if (e.type == EdgeType::Conv) {
        const HostTensor f = exporting::filter_to_oihw(w.at(e.id));
        b.initializer(id, f.shape, f.values);
        onnx::NodeProto* n = b.node("Conv", id + ".conv", {r, id}, id + ".out");
        GraphBuilder::attr(n, "kernel_shape", {e.kh, e.kw});
        GraphBuilder::attr(n, "strides", {e.stride, e.stride});
        // 'same' padding k/2 on both sides; with odd k the output is ceil(in / stride) as in evo.
        GraphBuilder::attr(n, "pads", {e.kh / 2, e.kw / 2, e.kh / 2, e.kw / 2});
        r = id + ".out";
      }
      // Nearest resize, one axis at a time: Gather with the integer source index of each output
      // row (axis 2) or column (axis 3).
      const auto resize = [&](const std::string& what, int axis, int in, int out) {
        if (in == out) return;
        const std::string name = id + "." + what;
        b.initializer_i64(name, exporting::nearest_indices(in, out));
        GraphBuilder::attr(b.node("Gather", name + ".resize", {r, name}, name + ".resized"),
                           "axis", axis);
        r = name + ".resized";
      };
      resize("rows", 2, e.out.h, e.reshaped.h);
      resize("cols", 3, e.out.w, e.reshaped.w);
      if (e.out.c > e.reshaped.c) {
        b.initializer_i64(id + ".starts", {0});
        b.initializer_i64(id + ".ends", {e.reshaped.c});
        b.initializer_i64(id + ".axes", {1});
        b.node("Slice", id + ".truncate", {r, id + ".starts", id + ".ends", id + ".axes"},
               id + ".channels");
        r = id + ".channels";
      } else if (e.out.c < e.reshaped.c) {
        // pads = [begin of N, C, H, W, end of N, C, H, W]: zeros after the last channel.
        b.initializer_i64(id + ".pads", {0, 0, 0, 0, 0, e.reshaped.c - e.out.c, 0, 0});
        b.node("Pad", id + ".zero_pad", {r, id + ".pads"}, id + ".channels");
        r = id + ".channels";
      }
      summands.push_back(r);
    }
    const std::string vid = P(v.id);
    std::string sum = summands.front();
    if (summands.size() > 1) {
      sum = vid + ".sum";
      b.node("Sum", vid + ".add", summands, sum);
    }
    if (v.activation == Activation::BnRelu) {
      for (const char* s : {".gamma", ".beta", ".running_mean", ".running_var"}) {
        const HostTensor& t = w.at(v.id + s);
        b.initializer(vid + s, t.shape, t.values);
      }
      onnx::NodeProto* n = b.node("BatchNormalization", vid + ".bn",
                                  {sum, vid + ".gamma", vid + ".beta", vid + ".running_mean",
                                   vid + ".running_var"},
                                  vid + ".normalized");
      GraphBuilder::attr_f(n, "epsilon", kBatchNormEps);
      b.node("Relu", vid + ".relu", {vid + ".normalized"}, vid);
      value[vi] = vid;
    } else {
      value[vi] = sum;  // a linear vertex is its sum: no node
    }
  }

  b.node("GlobalAveragePool", P("head.pool"), {value.back()}, P("head.pooled"));
  GraphBuilder::attr(b.node("Flatten", P("head.flatten"), {P("head.pooled")}, P("head.features")),
                     "axis", 1);
  const HostTensor& fw = w.at("fc.weight");
  const HostTensor& fb = w.at("fc.bias");
  b.initializer(P("fc.weight"), fw.shape, fw.values);
  b.initializer(P("fc.bias"), fb.shape, fb.values);
  GraphBuilder::attr(b.node("Gemm", P("head.fc"), {P("head.features"), P("fc.weight"),
                                                   P("fc.bias")},
                            logits),
                     "transB", 1);
  return logits;
}

onnx::ModelProto build_model(const std::vector<ExportNet>& nets, const ExportInfo& info) {
  const CompiledDna& first = exporting::check_members(nets);
  std::vector<float> mean, inv_std;
  exporting::standardisation(first, info, mean, inv_std);
  const std::vector<std::string> names = exporting::class_names(first, info);
  const bool ensemble = nets.size() > 1;

  onnx::ModelProto m;
  m.set_ir_version(7);  // the IR of opset 13
  m.set_producer_name("evo");
  m.set_producer_version(EVO_VERSION);
  m.set_doc_string(
      (ensemble ? "An ensemble of " + std::to_string(nets.size()) +
                      " nets found by evo's evolutionary search (" + info.id + "), trained on " +
                      info.dataset + ": 'probabilities' is the mean of the members' softmax, "
                      "'logits' its log. "
                : "DNA " + info.id + " found by evo's evolutionary search, trained on " +
                      info.dataset + ". ") +
      "Input 'image': float32 NCHW pixels / 255. Outputs 'logits' and 'probabilities' "
      "(softmax), one column per class in metadata evo.classes.");
  onnx::OperatorSetIdProto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  metadata(m, "evo.id", info.id);
  metadata(m, "evo.dataset", info.dataset);
  metadata(m, "evo.classes", nlohmann::json(names).dump());
  metadata(m, "evo.input", "float32 [N, " + std::to_string(first.input.c) + ", " +
                               std::to_string(first.input.h) + ", " +
                               std::to_string(first.input.w) +
                               "], pixel / 255; standardised inside the model");
  metadata(m, "evo.mean", nlohmann::json(info.mean).dump());
  metadata(m, "evo.std", nlohmann::json(info.std).dump());
  if (!ensemble) {
    metadata(m, "evo.dna", to_json(first.dna));
  } else {
    nlohmann::json members = nlohmann::json::array();
    for (std::size_t k = 0; k < nets.size(); ++k)
      members.push_back({{"id", nets[k].id},
                         {"prefix", "m" + std::to_string(k) + "."},
                         {"dna", nlohmann::json::parse(to_json(nets[k].plan->dna))}});
    metadata(m, "evo.members", members.dump());
  }

  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("evo_" + (info.id.empty() ? std::string("net") : info.id));
  GraphBuilder b(g);
  const int c_in = first.input.c;
  GraphBuilder::value_info(g->add_input(), "image", {c_in, first.input.h, first.input.w},
                           "pixels / 255, NCHW");
  b.initializer("input.mean", {1, c_in, 1, 1}, mean);
  b.initializer("input.inv_std", {1, c_in, 1, 1}, inv_std);
  b.node("Sub", "input.center", {"image", "input.mean"}, "input.centered");
  if (!ensemble) {
    // The input vertex's value carries its id, as every vertex's does.
    const std::string input = first.vertices[0].id;
    b.node("Mul", "input.scale", {"input.centered", "input.inv_std"}, input);
    add_net(b, first, *nets[0].weights, "", input, "logits");
    GraphBuilder::attr(b.node("Softmax", "head.softmax", {"logits"}, "probabilities"), "axis", 1);
  } else {
    // Every member reads the one standardised image (they were trained on the same data set, so
    // the same constants standardise it), and the ensemble is the mean of their probabilities,
    // as evo's own ensemble accuracy averages them. Its logits are that mean's log: a softmax of
    // them gives the mean back (softmax(log p) = p / sum(p) = p), and their order is its order.
    b.node("Mul", "input.scale", {"input.centered", "input.inv_std"}, "input.standardised");
    std::vector<std::string> probs;
    for (std::size_t k = 0; k < nets.size(); ++k) {
      const std::string prefix = "m" + std::to_string(k) + ".";
      const std::string logits =
          add_net(b, *nets[k].plan, *nets[k].weights, prefix, "input.standardised",
                  prefix + "logits");
      GraphBuilder::attr(b.node("Softmax", prefix + "head.softmax", {logits},
                                prefix + "probabilities"),
                         "axis", 1);
      probs.push_back(prefix + "probabilities");
    }
    b.node("Mean", "ensemble.mean", probs, "probabilities");
    b.node("Log", "ensemble.log", {"probabilities"}, "logits");
  }
  GraphBuilder::value_info(g->add_output(), "logits", {first.classes},
                           ensemble ? "log of the mean of the members' probabilities (its order "
                                      "is the ensemble's ranking)"
                                    : "class scores before the softmax (what `evo eval` ranks)");
  GraphBuilder::value_info(g->add_output(), "probabilities", {first.classes},
                           ensemble ? "mean of the members' softmax" : "softmax of the logits");
  return m;
}

}  // namespace

std::string onnx_model_bytes(const std::vector<ExportNet>& nets, const ExportInfo& info) {
  const onnx::ModelProto m = build_model(nets, info);
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    // A bug in this file, never the user's input: say so.
    throw ExportError(std::string("the ONNX model evo built fails onnx::checker (a bug in evo's "
                                  "exporter, please report it with the DNA): ") +
                      e.what());
  }
  std::string bytes;
  // Protobuf messages are limited to 2 GiB; a DNA within evo's limits stays far below (the
  // largest, 4096 channels, is ~600 MB per 3x3 convolution only when hand-written).
  if (!m.SerializeToString(&bytes))
    throw ExportError("the ONNX model does not serialise (over protobuf's 2 GiB limit?)");
  return bytes;
}

#else  // !EVO_HAVE_ONNX

std::string onnx_model_bytes(const std::vector<ExportNet>&, const ExportInfo&) {
  throw ExportError(kOnnxUnavailable);
}

#endif

std::string onnx_model_bytes(const CompiledDna& plan, const Weights& weights,
                             const ExportInfo& info) {
  return onnx_model_bytes({ExportNet{&plan, &weights, info.id}}, info);
}

void export_onnx(const std::vector<ExportNet>& nets, const ExportInfo& info,
                 const std::string& path) {
  const std::string bytes = onnx_model_bytes(nets, info);
  write_file_atomic(path, bytes, "ONNX model");
}

void export_onnx(const CompiledDna& plan, const Weights& weights, const ExportInfo& info,
                 const std::string& path) {
  export_onnx({ExportNet{&plan, &weights, info.id}}, info, path);
}

}  // namespace evo
