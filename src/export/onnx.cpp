// `evo export --format onnx`: a DNA with its weights as an ONNX model (opset kOnnxOpset), built
// with the ONNX project's own protobuf classes (Debian's libonnx-dev) and checked with its
// onnx::checker before a byte is written. Not an ONNX importer, and not used by training.
//
// The graph (export.h has the contract): image -> Sub(mean) -> Mul(inv_std) is the input vertex;
// then per vertex in topological order the in-edges (Conv, or the source itself), skips reshaped
// by Gather (rows, then columns, integer indices) and Slice/Pad (channels), a Sum when there are
// several, BatchNormalization + Relu for bn_relu vertices; then GlobalAveragePool, Flatten, Gemm
// (transB) -> "logits", Softmax -> "probabilities". Names: initialisers carry evo's weight keys
// ("e5", "v3.gamma", "fc.weight"), a vertex's value its id, an edge's result "<id>.out".
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

onnx::ModelProto build_model(const CompiledDna& plan, const Weights& weights,
                             const ExportInfo& info) {
  const auto w = exporting::host_weights(plan, weights);
  std::vector<float> mean, inv_std;
  exporting::standardisation(plan, info, mean, inv_std);
  const std::vector<std::string> names = exporting::class_names(plan, info);

  onnx::ModelProto m;
  m.set_ir_version(7);  // the IR of opset 13
  m.set_producer_name("evo");
  m.set_producer_version(EVO_VERSION);
  m.set_doc_string("DNA " + info.id + " found by evo's evolutionary search, trained on " +
                   info.dataset + ". Input 'image': float32 NCHW pixels / 255. Outputs 'logits' "
                   "and 'probabilities' (softmax), one column per class in metadata evo.classes.");
  onnx::OperatorSetIdProto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  metadata(m, "evo.id", info.id);
  metadata(m, "evo.dataset", info.dataset);
  metadata(m, "evo.classes", nlohmann::json(names).dump());
  metadata(m, "evo.input", "float32 [N, " + std::to_string(plan.input.c) + ", " +
                               std::to_string(plan.input.h) + ", " +
                               std::to_string(plan.input.w) +
                               "], pixel / 255; standardised inside the model");
  metadata(m, "evo.mean", nlohmann::json(info.mean).dump());
  metadata(m, "evo.std", nlohmann::json(info.std).dump());
  metadata(m, "evo.dna", to_json(plan.dna));

  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("evo_" + (info.id.empty() ? std::string("net") : info.id));
  GraphBuilder b(g);
  const int c_in = plan.input.c;
  GraphBuilder::value_info(g->add_input(), "image", {c_in, plan.input.h, plan.input.w},
                           "pixels / 255, NCHW");
  b.initializer("input.mean", {1, c_in, 1, 1}, mean);
  b.initializer("input.inv_std", {1, c_in, 1, 1}, inv_std);
  b.node("Sub", "input.center", {"image", "input.mean"}, "input.centered");

  // The value name of every vertex, by its index in plan.vertices.
  std::vector<std::string> value(plan.vertices.size());
  value[0] = plan.vertices[0].id;
  b.node("Mul", "input.scale", {"input.centered", "input.inv_std"}, value[0]);

  for (std::size_t vi = 1; vi < plan.vertices.size(); ++vi) {
    const VertexPlan& v = plan.vertices[vi];
    std::vector<std::string> summands;
    for (int ei : v.in_edges) {
      const EdgePlan& e = plan.edges[std::size_t(ei)];
      std::string r = value[std::size_t(e.from)];
      if (e.type == EdgeType::Conv) {
        const HostTensor f = exporting::filter_to_oihw(w.at(e.id));
        b.initializer(e.id, f.shape, f.values);
        onnx::NodeProto* n = b.node("Conv", e.id + ".conv", {r, e.id}, e.id + ".out");
        GraphBuilder::attr(n, "kernel_shape", {e.kh, e.kw});
        GraphBuilder::attr(n, "strides", {e.stride, e.stride});
        // 'same' padding k/2 on both sides; with odd k the output is ceil(in / stride) as in evo.
        GraphBuilder::attr(n, "pads", {e.kh / 2, e.kw / 2, e.kh / 2, e.kw / 2});
        r = e.id + ".out";
      }
      // Nearest resize, one axis at a time: Gather with the integer source index of each output
      // row (axis 2) or column (axis 3).
      const auto resize = [&](const std::string& what, int axis, int in, int out) {
        if (in == out) return;
        const std::string name = e.id + "." + what;
        b.initializer_i64(name, exporting::nearest_indices(in, out));
        GraphBuilder::attr(b.node("Gather", name + ".resize", {r, name}, name + ".resized"),
                           "axis", axis);
        r = name + ".resized";
      };
      resize("rows", 2, e.out.h, e.reshaped.h);
      resize("cols", 3, e.out.w, e.reshaped.w);
      if (e.out.c > e.reshaped.c) {
        b.initializer_i64(e.id + ".starts", {0});
        b.initializer_i64(e.id + ".ends", {e.reshaped.c});
        b.initializer_i64(e.id + ".axes", {1});
        b.node("Slice", e.id + ".truncate",
               {r, e.id + ".starts", e.id + ".ends", e.id + ".axes"}, e.id + ".channels");
        r = e.id + ".channels";
      } else if (e.out.c < e.reshaped.c) {
        // pads = [begin of N, C, H, W, end of N, C, H, W]: zeros after the last channel.
        b.initializer_i64(e.id + ".pads", {0, 0, 0, 0, 0, e.reshaped.c - e.out.c, 0, 0});
        b.node("Pad", e.id + ".zero_pad", {r, e.id + ".pads"}, e.id + ".channels");
        r = e.id + ".channels";
      }
      summands.push_back(r);
    }
    std::string sum = summands.front();
    if (summands.size() > 1) {
      sum = v.id + ".sum";
      b.node("Sum", v.id + ".add", summands, sum);
    }
    if (v.activation == Activation::BnRelu) {
      for (const char* s : {".gamma", ".beta", ".running_mean", ".running_var"}) {
        const HostTensor& t = w.at(v.id + s);
        b.initializer(v.id + s, t.shape, t.values);
      }
      onnx::NodeProto* n = b.node("BatchNormalization", v.id + ".bn",
                                  {sum, v.id + ".gamma", v.id + ".beta", v.id + ".running_mean",
                                   v.id + ".running_var"},
                                  v.id + ".normalized");
      GraphBuilder::attr_f(n, "epsilon", kBatchNormEps);
      b.node("Relu", v.id + ".relu", {v.id + ".normalized"}, v.id);
      value[vi] = v.id;
    } else {
      value[vi] = sum;  // a linear vertex is its sum: no node
    }
  }

  b.node("GlobalAveragePool", "head.pool", {value.back()}, "head.pooled");
  GraphBuilder::attr(b.node("Flatten", "head.flatten", {"head.pooled"}, "head.features"), "axis",
                     1);
  const HostTensor& fw = w.at("fc.weight");
  const HostTensor& fb = w.at("fc.bias");
  b.initializer("fc.weight", fw.shape, fw.values);
  b.initializer("fc.bias", fb.shape, fb.values);
  GraphBuilder::attr(b.node("Gemm", "head.fc", {"head.features", "fc.weight", "fc.bias"}, "logits"),
                     "transB", 1);
  GraphBuilder::attr(b.node("Softmax", "head.softmax", {"logits"}, "probabilities"), "axis", 1);
  GraphBuilder::value_info(g->add_output(), "logits", {plan.classes},
                           "class scores before the softmax (what `evo eval` ranks)");
  GraphBuilder::value_info(g->add_output(), "probabilities", {plan.classes},
                           "softmax of the logits");
  return m;
}

}  // namespace

std::string onnx_model_bytes(const CompiledDna& plan, const Weights& weights,
                             const ExportInfo& info) {
  const onnx::ModelProto m = build_model(plan, weights, info);
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

std::string onnx_model_bytes(const CompiledDna&, const Weights&, const ExportInfo&) {
  throw ExportError(kOnnxUnavailable);
}

#endif

void export_onnx(const CompiledDna& plan, const Weights& weights, const ExportInfo& info,
                 const std::string& path) {
  const std::string bytes = onnx_model_bytes(plan, weights, info);
  write_file_atomic(path, bytes, "ONNX model");
}

}  // namespace evo
