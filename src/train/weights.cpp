// Weights of a model: initialisation, the paper's inheritance, and the checksummed weight file.
// Not the graph that uses them (model.cpp).
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "evo/io.h"
#include "evo/model.h"

namespace evo {

namespace {

constexpr char kMagic[8] = {'E', 'V', 'O', 'W', 'E', 'I', 'G', 'H'};
constexpr uint32_t kVersion = 1;

std::string shape_str(const std::vector<int64_t>& dims) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < dims.size(); ++i) os << (i ? ", " : "") << dims[i];
  os << ']';
  return os.str();
}

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

// Little-endian writer/reader with the running CRC-32 of what passed through.
struct Writer {
  std::string bytes;
  void put(const void* p, std::size_t n) { bytes.append(static_cast<const char*>(p), n); }
  template <typename T>
  void put(T v) {
    put(&v, sizeof v);
  }
};

class Reader {
 public:
  Reader(const std::string& path, std::string bytes) : path_(path), bytes_(std::move(bytes)) {}
  void get(void* p, std::size_t n, const char* what) {
    if (pos_ + n > bytes_.size())
      throw WeightsError("weight file " + path_ + " is truncated at offset " +
                         std::to_string(bytes_.size()) + " (reading " + what + " at offset " +
                         std::to_string(pos_) + ", " + std::to_string(n) + " bytes)");
    std::memcpy(p, bytes_.data() + pos_, n);
    pos_ += n;
  }
  template <typename T>
  T get(const char* what) {
    T v;
    get(&v, sizeof v, what);
    return v;
  }
  std::size_t pos() const { return pos_; }
  std::size_t size() const { return bytes_.size(); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string path_, bytes_;
  std::size_t pos_ = 0;
};

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
  Writer out;
  out.put(kMagic, sizeof kMagic);
  out.put<uint32_t>(kVersion);
  out.put<uint32_t>(uint32_t(weights.tensors.size()));
  for (const auto& [key, t] : weights.tensors) {
    out.put<uint16_t>(uint16_t(key.size()));
    out.put(key.data(), key.size());
    const std::vector<int64_t> dims = dims_of(t);
    out.put<uint8_t>(uint8_t(dims.size()));
    for (int64_t d : dims) out.put<int64_t>(d);
    const std::vector<float> values = t.to_host();
    out.put(values.data(), values.size() * sizeof(float));
  }
  const uint32_t crc = uint32_t(
      crc32(0L, reinterpret_cast<const Bytef*>(out.bytes.data()), uInt(out.bytes.size())));
  out.put<uint32_t>(crc);

  // Readers see all or nothing, and a link planted at the temporary name is never followed.
  try {
    write_file_atomic(path, out.bytes, "weight file");
  } catch (const Error& e) {
    throw WeightsError(e.what());
  }
}

Weights load_weights(const std::string& path, const CompiledDna& plan, Device device) {
  // The file `plan` expects has a known size; a bigger one is the wrong file (or /dev/zero), and
  // is refused before it is read. The slack lets a file with a few stray bytes reach the precise
  // errors below.
  uint64_t expected = sizeof kMagic + 4 + 4 + 4;
  for (const ParamInfo& p : plan.params)
    expected += 2 + p.key.size() + 1 + 8 * p.shape.size() + 4 * uint64_t(p.elements());
  std::string bytes;
  try {
    bytes = read_file_limited(path, expected + (uint64_t(1) << 20), "weight file");
  } catch (const Error& e) {
    throw WeightsError(std::string(e.what()) + " (" + std::to_string(expected) +
                       " bytes expected for this DNA)");
  }
  Reader in(path, std::move(bytes));

  char magic[sizeof kMagic];
  in.get(magic, sizeof magic, "the magic number");
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    throw WeightsError("weight file " + path + " is not an evo weight file (bad magic at offset 0)");
  const uint32_t version = in.get<uint32_t>("the version");
  if (version != kVersion)
    throw WeightsError("weight file " + path + " has format version " + std::to_string(version) +
                       "; this evo reads version " + std::to_string(kVersion));
  const uint32_t count = in.get<uint32_t>("the tensor count");
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> file_tensors;
  for (uint32_t i = 0; i < count; ++i) {
    const uint16_t len = in.get<uint16_t>("a key length");
    std::string key(len, '\0');
    in.get(key.data(), len, "a key");
    const uint8_t rank = in.get<uint8_t>("a rank");
    if (rank > Shape::kMaxRank)
      throw WeightsError("weight file " + path + ": tensor '" + key + "' has rank " +
                         std::to_string(rank) + " at offset " + std::to_string(in.pos() - 1));
    std::vector<int64_t> dims(rank);
    int64_t n = 1;
    for (auto& d : dims) {
      d = in.get<int64_t>("a dimension");
      if (d < 0 || d > (int64_t(1) << 31))
        throw WeightsError("weight file " + path + ": tensor '" + key + "' has dimension " +
                           std::to_string(d) + " at offset " + std::to_string(in.pos() - 8));
      // n stays within what the file can hold (so no overflow: d <= 2^31 and n <= 2^62 / 4).
      const uint64_t room = (in.size() - in.pos()) / 4;
      if (d != 0 && uint64_t(n) > room / uint64_t(d))
        throw WeightsError("weight file " + path + " is truncated: tensor '" + key +
                           "' has more elements than the " + std::to_string(in.size()) +
                           "-byte file holds (dimensions up to offset " +
                           std::to_string(in.pos() - 8) + ")");
      n *= d;
    }
    // Check the size before allocating: a corrupt dimension must not ask for terabytes.
    if (uint64_t(n) * 4 > in.size() - in.pos())
      throw WeightsError("weight file " + path + " is truncated: tensor '" + key + "' needs " +
                         std::to_string(n * 4) + " bytes at offset " + std::to_string(in.pos()) +
                         ", the file ends at offset " + std::to_string(in.size()));
    std::vector<float> values(static_cast<std::size_t>(n));
    in.get(values.data(), values.size() * sizeof(float), "tensor values");
    file_tensors[key] = {dims, std::move(values)};
  }
  const std::size_t body = in.pos();
  const uint32_t stored = in.get<uint32_t>("the checksum");
  const uint32_t crc =
      uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(in.bytes().data()), uInt(body)));
  if (crc != stored)
    throw WeightsError("weight file " + path + " is corrupt: CRC-32 mismatch (stored " +
                       std::to_string(stored) + ", computed " + std::to_string(crc) + ")");
  if (in.pos() != in.size())
    throw WeightsError("weight file " + path + " has " + std::to_string(in.size() - in.pos()) +
                       " unexpected bytes after the checksum at offset " + std::to_string(in.pos()));

  Weights w;
  for (const ParamInfo& p : plan.params) {
    const auto it = file_tensors.find(p.key);
    if (it == file_tensors.end())
      throw WeightsError("weight file " + path + " was written for another DNA: it has no tensor '" +
                         p.key + "' (" + to_string(p.kind) + ", shape " + shape_str(p.shape) + ")");
    if (it->second.first != p.shape)
      throw WeightsError("weight file " + path + " was written for another DNA: tensor '" + p.key +
                         "' has shape " + shape_str(it->second.first) + " in the file, " +
                         shape_str(p.shape) + " in this DNA");
    w.tensors[p.key] = Tensor::from_host(it->second.second, Shape(p.shape), device);
  }
  if (file_tensors.size() != plan.params.size()) {
    for (const auto& [key, t] : file_tensors)
      if (!plan.find_param(key))
        throw WeightsError("weight file " + path + " was written for another DNA: its tensor '" +
                           key + "' has no place in this DNA");
  }
  return w;
}

}  // namespace evo
