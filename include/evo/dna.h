// The DNA of an individual (the paper's graph of convolutions plus a learning rate): its JSON
// format, validation, and compilation for an input shape. Not the model: no weights or kernels.
//
// ActShape of a DNA (data/dna/README.md has the JSON with an example):
// - Vertices hold rank-3 activations [H, W, C]. Every vertex lies on one backbone path from the
//   input vertex (the image) to the output vertex; each non-input vertex has exactly one backbone
//   in-edge (its primary input). The input vertex may be the output vertex (the paper's initial
//   individual: image -> global pool -> fully connected).
// - Edges are identity or convolution. Skip edges (skip = true) are identity edges that go forward
//   along the backbone. A vertex's value is the sum of its in-edges' results, the skip results
//   reshaped to the backbone result (nearest resize of H, W; channels truncated or zero-padded),
//   then its activation: batch norm + ReLU, or linear.
// - After the output vertex: global average pool, fully connected to the classes (with bias),
//   softmax.
// - Ids are stable strings ("v3", "e7"): mutations keep them, so weights can follow them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "evo/error.h"

namespace evo {

inline constexpr const char* kDnaFormat = "evo-dna/1";

// Limits beyond which a DNA is rejected as absurd. Mutations should clamp to them.
inline constexpr int kMaxChannels = 4096;        // of any vertex, after depth factors
inline constexpr double kMaxDepthFactor = 4096;  // output channels / input channels of a conv
inline constexpr int kMaxFilterSize = 63;        // filter height or width (odd, >= 1)
inline constexpr int kMaxStrideScale = 8;        // stride 2^s <= 256
// Size of a DNA. Evolved DNAs have tens of vertices (the paper's best CIFAR-10 net: ~30 layers);
// the limits leave room for hand-written ones while keeping every check cheap and memory small.
inline constexpr int kMaxVertices = 10000;
inline constexpr int kMaxEdges = 40000;
inline constexpr uint64_t kMaxDnaFileBytes = uint64_t(4) << 20;  // 4 MiB: ~100 bytes per edge

// A DNA that is malformed or invalid. what() = "SOURCE: FIELD: REASON"; FIELD is a path into the
// JSON such as edges[2] (id "e5").filter, or empty when the error concerns the whole DNA.
class DnaError : public Error {
 public:
  DnaError(std::string source, std::string field, std::string reason);
  const std::string& source() const { return source_; }
  const std::string& field() const { return field_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string source_, field_, reason_;
};

enum class Activation { Linear, BnRelu };
enum class EdgeType { Identity, Conv };

const char* to_string(Activation a);  // "linear", "bn_relu" (the JSON spelling)
const char* to_string(EdgeType t);    // "identity", "conv"

struct Vertex {
  std::string id;
  Activation activation = Activation::Linear;
};

struct Edge {
  std::string id;
  std::string from, to;  // vertex ids
  EdgeType type = EdgeType::Identity;
  bool skip = false;  // false: the backbone (primary) in-edge of `to`
  // Convolution only (ignored for identity edges, and not written to JSON for them):
  double depth_factor = 1.0;  // output channels = max(1, round(input channels * depth_factor))
  int filter_h = 3, filter_w = 3;
  int stride_scale = 0;  // stride = 2^stride_scale
  int stride() const { return 1 << stride_scale; }
};

// Equal as DNA: the conv fields of identity edges do not count (they are not serialised).
bool operator==(const Edge& a, const Edge& b);

inline bool operator==(const Vertex& a, const Vertex& b) {
  return a.id == b.id && a.activation == b.activation;
}

struct Dna {
  double learning_rate = 0.1;
  std::string input, output;  // vertex ids
  std::vector<Vertex> vertices;
  std::vector<Edge> edges;
  // Counter for minting fresh ids (mint_id): always above the number at the end of every id.
  int64_t next_id = 0;
  // Where the DNA came from (a path, "<string>"), for error messages. Not part of the DNA itself:
  // not serialised and ignored by ==.
  std::string source = "<dna>";

  const Vertex* find_vertex(const std::string& id) const;  // nullptr when absent
  const Edge* find_edge(const std::string& id) const;
  // A fresh id `prefix` + next_id, and advances next_id ("v12", "e13").
  std::string mint_id(const std::string& prefix);

  friend bool operator==(const Dna& a, const Dna& b) {
    return a.learning_rate == b.learning_rate && a.input == b.input && a.output == b.output &&
           a.vertices == b.vertices && a.edges == b.edges && a.next_id == b.next_id;
  }
};

// The paper's initial individual: one vertex (the image) that is both input and output, so the
// model is global pool -> fully connected; learning rate 0.1.
Dna initial_dna();

// Parses and validates a DNA (throws DnaError naming `source_name` and the field). Unknown fields
// are errors, so a typo cannot silently drop a setting. "next_id" is optional (computed when
// absent). A conv edge may give "stride" (a power of two) instead of, or beside, "stride_scale".
Dna parse_dna(const std::string& json_text, const std::string& source_name = "<string>");
Dna dna_from_json(const nlohmann::json& j, const std::string& source_name = "<json>");
Dna load_dna(const std::string& path);  // file errors and DNA errors both name the path

// Pretty JSON (2-space indent, fields in a fixed order, trailing newline); parse_dna(to_json(d))
// == d, and a file written by to_json reads back and re-serialises byte for byte.
std::string to_json(const Dna& dna);
nlohmann::json dna_to_json(const Dna& dna);
void save_dna(const Dna& dna, const std::string& path);

// Throws DnaError on the first problem: ids (empty, duplicate, not [A-Za-z0-9_-], reserved "fc"),
// dangling vertex references, cycles, the backbone (one path input -> output through every vertex,
// one backbone in-edge per non-input vertex), skips (identity, forward, not duplicated), conv
// settings (odd filters in [1, kMaxFilterSize], stride scale in [0, kMaxStrideScale], depth factor
// finite in (0, kMaxDepthFactor]), activations (the input is linear), learning rate (finite > 0),
// next_id. ActShape-dependent checks (channel counts, budgets) are compile()'s.
void validate(const Dna& dna);

// ---- compilation for an input shape ------------------------------------------------------------

struct ActShape {
  int h = 0, w = 0, c = 0;
  int64_t elements() const { return int64_t(h) * w * c; }
  std::string str() const;  // "28x28x32"
  friend bool operator==(const ActShape&, const ActShape&) = default;
};

// Limits a compiled model must fit; 0 means no limit. Per image: multiply activation bytes by the
// batch size for a batch.
struct Budget {
  int64_t max_params = 0;            // trainable parameters (conv, batch-norm gamma/beta, fc)
  double max_flops_per_image = 0;    // forward FLOPs per image
  int64_t max_activation_bytes = 0;  // activation bytes a training step keeps per image
};

struct VertexPlan {
  std::string id;
  Activation activation = Activation::Linear;
  ActShape shape;                // after summing the in-edges (the backbone result's shape)
  std::vector<int> in_edges;  // indexes into CompiledDna::edges; the backbone edge first
};

struct EdgePlan {
  std::string id;
  EdgeType type = EdgeType::Identity;
  bool skip = false;
  int from = 0, to = 0;  // indexes into CompiledDna::vertices
  ActShape in;              // the source vertex's shape
  ActShape out;             // the edge's own result: conv output, or `in` for identity
  ActShape reshaped;        // `out` brought to the target vertex's shape (== out for backbone edges)
  // Convolution geometry ('same' padding kh/2, kw/2; output size ceil(in / stride)):
  int kh = 1, kw = 1, stride = 1;
  int64_t params = 0;  // filter elements: C_out * KH * KW * C_in
  double flops = 0;    // forward FLOPs per image: 2 * OH * OW * C_out * KH * KW * C_in
  bool resizes_space() const { return out.h != reshaped.h || out.w != reshaped.w; }
  bool resizes_channels() const { return out.c != reshaped.c; }
};

enum class ParamKind { ConvFilter, BnGamma, BnBeta, BnRunningMean, BnRunningVar, FcWeight, FcBias };
const char* to_string(ParamKind k);

// One weight tensor with its stable key; inheritance keeps a tensor when key and shape both match.
//   conv edge "e5"      -> "e5"            [C_out, KH, KW, C_in]
//   bn_relu vertex "v3" -> "v3.gamma", "v3.beta", "v3.running_mean", "v3.running_var"   [C]
//   the classifier      -> "fc.weight" [classes, C_output], "fc.bias" [classes]
struct ParamInfo {
  std::string key;
  std::vector<int64_t> shape;
  ParamKind kind = ParamKind::ConvFilter;
  std::string owner;  // the edge or vertex id, or "fc"
  int64_t elements() const;
  bool trainable() const {  // running statistics are state, not trained by SGD
    return kind != ParamKind::BnRunningMean && kind != ParamKind::BnRunningVar;
  }
};

// FLOP rule (documented in data/dna/README.md): multiply-adds count 2 FLOPs; the forward pass
// counts every convolution and the fully connected layer, nothing else (batch norm, ReLU, sums,
// resizes, pooling and softmax are elementwise and below 1% for any net with a convolution). A
// training step counts 3x the forward pass (backward data + backward filter each cost about one
// forward), slightly over-counting the first convolution's unneeded input gradient.
inline constexpr double kTrainFlopsPerForward = 3.0;

struct CompiledDna {
  Dna dna;
  ActShape input;
  int classes = 0;
  std::vector<VertexPlan> vertices;  // topological order: the backbone path, input first
  std::vector<EdgePlan> edges;       // execution order: by target vertex, backbone edge first
  std::vector<ParamInfo> params;     // every weight tensor, in execution order, fc last
  int64_t param_count = 0;           // trainable elements (running statistics excluded)
  int64_t state_count = 0;           // batch-norm running statistics
  double forward_flops = 0;          // per image
  double train_flops = 0;            // per image per training step
  // Float32 activations a training step keeps per image: every vertex value, a second copy for
  // bn_relu vertices (pre- and post-activation), every conv result and every reshaped skip result.
  int64_t activation_bytes = 0;

  const VertexPlan& output() const { return vertices.back(); }
  int vertex_index(const std::string& id) const;  // -1 when absent
  int edge_index(const std::string& id) const;
  const ParamInfo* find_param(const std::string& key) const;
};

// Validates the DNA, orders it, infers every shape for images of height x width x channels and
// `classes` classes, counts parameters and FLOPs, and checks them against `budget`. Throws DnaError
// (channels above kMaxChannels, an exceeded budget, bad arguments) naming the field.
CompiledDna compile(const Dna& dna, int height, int width, int channels, int classes,
                    Budget budget = {});

// The text `evo show FILE` prints: a table of vertices and edges in execution order with shapes,
// parameters and FLOPs, then the head and the totals.
std::string describe(const CompiledDna& plan);

// Graphviz (dot) source of the graph: vertices with their shapes, conv edges labelled, skip edges
// dashed, the pool and classifier at the end. For `evo show FILE --dot`.
std::string to_dot(const CompiledDna& plan);

}  // namespace evo
