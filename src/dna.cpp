// The DNA's JSON format (evo-dna/1) and its validation: parse, serialise, check every rule.
// Not shape inference or FLOP counting (dna_compile.cpp), and not mutations.
#include "evo/dna.h"
#include "evo/io.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string_view>

namespace evo {

using nlohmann::json;

DnaError::DnaError(std::string source, std::string field, std::string reason)
    : Error(source + ": " + (field.empty() ? "" : field + ": ") + reason),
      source_(std::move(source)),
      field_(std::move(field)),
      reason_(std::move(reason)) {}

const char* to_string(Activation a) {
  return a == Activation::BnRelu ? "bn_relu" : "linear";
}
const char* to_string(EdgeType t) {
  return t == EdgeType::Conv ? "conv" : "identity";
}

bool operator==(const Edge& a, const Edge& b) {
  const bool same =
      a.id == b.id && a.from == b.from && a.to == b.to && a.type == b.type && a.skip == b.skip;
  if (!same || a.type == EdgeType::Identity) return same;
  return a.depth_factor == b.depth_factor && a.filter_h == b.filter_h && a.filter_w == b.filter_w &&
         a.stride_scale == b.stride_scale;
}

const Vertex* Dna::find_vertex(const std::string& id) const {
  for (const Vertex& v : vertices)
    if (v.id == id) return &v;
  return nullptr;
}

const Edge* Dna::find_edge(const std::string& id) const {
  for (const Edge& e : edges)
    if (e.id == id) return &e;
  return nullptr;
}

std::string Dna::mint_id(const std::string& prefix) {
  return prefix + std::to_string(next_id++);
}

Dna initial_dna() {
  Dna d;
  d.learning_rate = 0.1;
  d.input = d.output = "v0";
  d.vertices = {{"v0", Activation::Linear}};
  d.next_id = 1;
  d.source = "<initial>";
  return d;
}

namespace {

// A string quoted for an error message: cut to a readable length, any bytes (invalid UTF-8 shows
// as U+FFFD instead of throwing).
std::string json_quote(const std::string& s) { return quote_excerpt(s, 120); }

// A string as JSON text for the DNA file: whole (validate() has checked what ids may hold).
std::string json_text(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string vertex_field(const Dna& d, std::size_t i) {
  return "vertices[" + std::to_string(i) + "] (id " + json_quote(d.vertices[i].id) + ")";
}

std::string edge_field(const Dna& d, std::size_t i) {
  return "edges[" + std::to_string(i) + "] (id " + json_quote(d.edges[i].id) + ")";
}

// The number at the end of an id ("v12" -> 12), or -1 when it ends in no digit. Ids are at most
// 64 characters, but only the last 15 digits count so the value cannot overflow.
int64_t trailing_number(const std::string& id) {
  std::size_t start = id.size();
  while (start > 0 && std::isdigit(static_cast<unsigned char>(id[start - 1]))) --start;
  if (start == id.size()) return -1;
  if (id.size() - start > 15) start = id.size() - 15;
  return std::stoll(id.substr(start));
}

int64_t smallest_next_id(const Dna& d) {
  int64_t top = -1;
  for (const Vertex& v : d.vertices) top = std::max(top, trailing_number(v.id));
  for (const Edge& e : d.edges) top = std::max(top, trailing_number(e.id));
  return top + 1;
}

void check_id(const Dna& d, const std::string& field, const std::string& id) {
  if (id.empty())
    throw DnaError(d.source, field + ".id", "is empty; give every vertex and edge an id");
  if (id.size() > 64) throw DnaError(d.source, field + ".id", "is longer than 64 characters");
  for (char ch : id)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-')
      throw DnaError(d.source, field + ".id",
                     json_quote(id) + " contains " + json_quote(std::string(1, ch)) +
                         "; ids use letters, digits, '_' and '-' only (weight keys append '.')");
  if (id == "fc")
    throw DnaError(d.source, field + ".id", "\"fc\" is reserved for the classifier's weights");
}

// Depth-first search over every edge; returns the vertices and edges of one cycle, or nothing.
bool find_cycle(const Dna& d, std::vector<std::string>& cycle_vertices,
                std::vector<std::string>& cycle_edges) {
  std::map<std::string, std::vector<std::size_t>> out_edges;
  for (std::size_t i = 0; i < d.edges.size(); ++i) out_edges[d.edges[i].from].push_back(i);
  enum Color { kWhite, kGrey, kBlack };
  std::map<std::string, Color> color;
  std::vector<std::size_t> stack_edges;  // edges of the current DFS path
  std::vector<std::string> stack_vertices;

  // Iterative to keep deep chains off the call stack.
  for (const Vertex& root : d.vertices) {
    if (color[root.id] != kWhite) continue;
    struct Frame {
      std::string v;
      std::size_t next = 0;
    };
    std::vector<Frame> frames{{root.id}};
    color[root.id] = kGrey;
    stack_vertices = {root.id};
    stack_edges.clear();
    while (!frames.empty()) {
      Frame& f = frames.back();
      const auto& outs = out_edges[f.v];
      if (f.next == outs.size()) {
        color[f.v] = kBlack;
        frames.pop_back();
        stack_vertices.pop_back();
        if (!stack_edges.empty()) stack_edges.pop_back();
        continue;
      }
      const std::size_t ei = outs[f.next++];
      const std::string& to = d.edges[ei].to;
      if (color[to] == kGrey) {
        const auto at = std::find(stack_vertices.begin(), stack_vertices.end(), to);
        cycle_vertices.assign(at, stack_vertices.end());
        cycle_vertices.push_back(to);
        const std::size_t first = std::size_t(at - stack_vertices.begin());
        for (std::size_t k = first; k < stack_edges.size(); ++k)
          cycle_edges.push_back(d.edges[stack_edges[k]].id);
        cycle_edges.push_back(d.edges[ei].id);
        return true;
      }
      if (color[to] == kWhite) {
        color[to] = kGrey;
        stack_vertices.push_back(to);
        stack_edges.push_back(ei);
        frames.push_back({to});
      }
    }
  }
  return false;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

}  // namespace

void validate(const Dna& d) {
  const std::string& src = d.source;
  if (!std::isfinite(d.learning_rate) || d.learning_rate <= 0)
    throw DnaError(src, "learning_rate",
                   "is " + json(d.learning_rate).dump() + "; it must be a finite number > 0");

  // Ids: one namespace for vertices and edges, since both name weight tensors.
  if (d.vertices.empty())
    throw DnaError(src, "vertices", "is empty; a DNA needs at least the input vertex");
  if (d.vertices.size() > std::size_t(kMaxVertices))
    throw DnaError(src, "vertices", "has " + std::to_string(d.vertices.size()) +
                                        " vertices; a DNA may have at most " +
                                        std::to_string(kMaxVertices));
  if (d.edges.size() > std::size_t(kMaxEdges))
    throw DnaError(src, "edges", "has " + std::to_string(d.edges.size()) +
                                     " edges; a DNA may have at most " + std::to_string(kMaxEdges));
  std::map<std::string, std::string> seen;  // id -> field that defined it
  for (std::size_t i = 0; i < d.vertices.size(); ++i) {
    const std::string field = vertex_field(d, i);
    check_id(d, field, d.vertices[i].id);
    const auto [it, fresh] = seen.emplace(d.vertices[i].id, field);
    if (!fresh)
      throw DnaError(
          src, field + ".id",
          "duplicate id " + json_quote(d.vertices[i].id) + " (also used by " + it->second + ")");
  }
  for (std::size_t i = 0; i < d.edges.size(); ++i) {
    const std::string field = edge_field(d, i);
    check_id(d, field, d.edges[i].id);
    const auto [it, fresh] = seen.emplace(d.edges[i].id, field);
    if (!fresh)
      throw DnaError(
          src, field + ".id",
          "duplicate id " + json_quote(d.edges[i].id) + " (also used by " + it->second + ")");
  }

  if (!d.find_vertex(d.input))
    throw DnaError(src, "input", json_quote(d.input) + " is not the id of any vertex");
  if (!d.find_vertex(d.output))
    throw DnaError(src, "output", json_quote(d.output) + " is not the id of any vertex");
  if (d.find_vertex(d.input)->activation != Activation::Linear)
    throw DnaError(
        src, "input",
        "vertex " + json_quote(d.input) + " is the image and must have activation \"linear\"");

  // Edges one by one: endpoints and settings. Vertex ids in a set: a lookup per edge must not
  // walk the vertex list (10,000 of each would be 10^8 string compares).
  std::set<std::string_view> vertex_ids;
  for (const Vertex& v : d.vertices) vertex_ids.insert(v.id);
  for (std::size_t i = 0; i < d.edges.size(); ++i) {
    const Edge& e = d.edges[i];
    const std::string field = edge_field(d, i);
    if (!vertex_ids.count(e.from))
      throw DnaError(src, field + ".from", json_quote(e.from) + " is not the id of any vertex");
    if (!vertex_ids.count(e.to))
      throw DnaError(src, field + ".to", json_quote(e.to) + " is not the id of any vertex");
    if (e.skip && e.type != EdgeType::Identity)
      throw DnaError(src, field + ".type",
                     "a skip edge must be \"identity\"; convolutions belong on the backbone");
    if (e.type != EdgeType::Conv) continue;
    for (const auto& [name, size] :
         {std::pair{"filter[0]", e.filter_h}, {"filter[1]", e.filter_w}}) {
      if (size < 1 || size > kMaxFilterSize || size % 2 == 0)
        throw DnaError(src, field + "." + name,
                       std::to_string(size) +
                           (size < 1        ? " is not positive"
                            : size % 2 == 0 ? " is even"
                                            : " is too large") +
                           "; filter sizes are odd, 1 to " + std::to_string(kMaxFilterSize) +
                           " (1, 3, 5, ...)");
    }
    if (e.stride_scale < 0 || e.stride_scale > kMaxStrideScale)
      throw DnaError(src, field + ".stride_scale",
                     std::to_string(e.stride_scale) +
                         " is out of range; the stride is 2^scale "
                         "with scale 0 to " +
                         std::to_string(kMaxStrideScale));
    if (!std::isfinite(e.depth_factor) || e.depth_factor <= 0 || e.depth_factor > kMaxDepthFactor)
      throw DnaError(src, field + ".depth_factor",
                     json(e.depth_factor).dump() + " is not a finite number in (0, " +
                         std::to_string(int(kMaxDepthFactor)) +
                         "]; output channels = input channels x depth factor");
  }

  std::vector<std::string> cycle_vertices, cycle_edges;
  if (find_cycle(d, cycle_vertices, cycle_edges))
    throw DnaError(src, "edges",
                   "cycle " + join(cycle_vertices, " -> ") + " (edges " + join(cycle_edges, ", ") +
                       "); the graph must be acyclic, with skips going forward along the backbone");

  // The backbone: one path from the input through every vertex to the output.
  std::map<std::string, std::size_t> backbone_in, backbone_out;  // vertex -> edge index
  for (std::size_t i = 0; i < d.edges.size(); ++i) {
    const Edge& e = d.edges[i];
    if (e.to == d.input)
      throw DnaError(src, edge_field(d, i) + ".to",
                     "enters the input vertex " + json_quote(d.input) + ", which is the image");
    if (e.skip) continue;
    if (const auto [it, fresh] = backbone_in.emplace(e.to, i); !fresh)
      throw DnaError(src, edge_field(d, i),
                     "vertex " + json_quote(e.to) +
                         " has a second backbone in-edge (the first is " +
                         json_quote(d.edges[it->second].id) +
                         "); every vertex has exactly one, mark the others \"skip\": true");
    if (const auto [it, fresh] = backbone_out.emplace(e.from, i); !fresh)
      throw DnaError(src, edge_field(d, i),
                     "vertex " + json_quote(e.from) +
                         " has a second backbone out-edge (the first is " +
                         json_quote(d.edges[it->second].id) + "); the backbone is a single path");
  }
  std::map<std::string, std::size_t> position;  // vertex -> index along the backbone
  std::string at = d.input;
  position[at] = 0;
  while (at != d.output) {
    const auto next = backbone_out.find(at);
    if (next == backbone_out.end())
      throw DnaError(src, "output",
                     "the backbone from the input " + json_quote(d.input) + " stops at " +
                         json_quote(at) + " and never reaches the output " + json_quote(d.output));
    at = d.edges[next->second].to;
    const std::size_t index = position.size();
    position[at] = index;
  }
  if (const auto past = backbone_out.find(d.output); past != backbone_out.end())
    throw DnaError(src, edge_field(d, past->second),
                   "the backbone continues past the output vertex " + json_quote(d.output));
  for (std::size_t i = 0; i < d.vertices.size(); ++i)
    if (!position.count(d.vertices[i].id))
      throw DnaError(src, vertex_field(d, i),
                     "is not on the backbone path from " + json_quote(d.input) + " to " +
                         json_quote(d.output) + "; every vertex must be");

  // Skips: forward (already implied by acyclicity) and each pair joined at most once.
  std::map<std::pair<std::string, std::string>, std::string> skip_pairs;
  for (std::size_t i = 0; i < d.edges.size(); ++i) {
    const Edge& e = d.edges[i];
    if (!e.skip) continue;
    if (position[e.from] >= position[e.to])
      throw DnaError(src, edge_field(d, i), "skip edge goes backward along the backbone");
    const auto [it, fresh] = skip_pairs.emplace(std::pair{e.from, e.to}, e.id);
    if (!fresh)
      throw DnaError(src, edge_field(d, i),
                     "duplicates skip edge " + json_quote(it->second) + " (same from and to)");
  }

  // Ids count their last 15 digits (trailing_number), so a larger counter means nothing and
  // would overflow when minting.
  constexpr int64_t kMaxNextId = 999'999'999'999'999;
  if (d.next_id > kMaxNextId)
    throw DnaError(src, "next_id", std::to_string(d.next_id) + " is above the largest id number, " +
                                       std::to_string(kMaxNextId));
  if (const int64_t need = smallest_next_id(d); d.next_id < need)
    throw DnaError(src, "next_id",
                   std::to_string(d.next_id) +
                       " could mint an id that exists already; it must be "
                       "at least " +
                       std::to_string(need) + " (one above every id's number)");
}

// ---- JSON
// ----------------------------------------------------------------------------------------

namespace {

// Reads one JSON object, tracking which fields were used so the rest can be reported as unknown.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string field, const std::string& source)
      : j_(j), field_(std::move(field)), source_(source) {
    if (!j.is_object())
      throw DnaError(source_, field_, "must be a JSON object, not " + std::string(j.type_name()));
  }

  bool has(const char* key) const { return j_.contains(key); }

  const json& get(const char* key) {
    if (!j_.contains(key))
      throw DnaError(source_, field_.empty() ? key : field_ + "." + key,
                     "is missing; add it (see data/dna/README.md)");
    used_.insert(key);
    return j_.at(key);
  }

  std::string path(const char* key) const { return field_.empty() ? key : field_ + "." + key; }

  std::string string(const char* key) {
    const json& v = get(key);
    if (!v.is_string()) wrong_type(key, "a string", v);
    return v.get<std::string>();
  }

  double number(const char* key) {
    const json& v = get(key);
    if (!v.is_number()) wrong_type(key, "a number", v);
    return v.get<double>();
  }

  int64_t integer(const char* key) {
    const json& v = get(key);
    if (!v.is_number_integer()) wrong_type(key, "an integer", v);
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
      throw DnaError(source_, path(key), "is too large");
    return v.get<int64_t>();
  }

  bool boolean(const char* key) {
    const json& v = get(key);
    if (!v.is_boolean()) wrong_type(key, "true or false", v);
    return v.get<bool>();
  }

  const json& array(const char* key) {
    const json& v = get(key);
    if (!v.is_array()) wrong_type(key, "an array", v);
    return v;
  }

  // Every field the reader did not ask for is a mistake (a typo, or a newer format).
  void reject_unknown(const std::string& known) const {
    for (const auto& [key, value] : j_.items())
      if (!used_.count(key))
        throw DnaError(source_, path(key.c_str()), "unknown field; the fields here are " + known);
  }

  [[noreturn]] void wrong_type(const char* key, const char* want, const json& v) const {
    throw DnaError(source_, path(key),
                   "must be " + std::string(want) + ", not " + v.type_name() + " " + json_excerpt(v));
  }

 private:
  const json& j_;
  std::string field_;
  const std::string& source_;
  std::set<std::string> used_;
};

int int_in_range(const std::string& field, const json& v, const std::string& source) {
  if (!v.is_number_integer())
    throw DnaError(source, field,
                   "must be an integer, not " + std::string(v.type_name()) + " " + json_excerpt(v));
  const int64_t x = v.is_number_unsigned()
                        ? int64_t(std::min<uint64_t>(v.get<uint64_t>(), 1u << 30))
                        : v.get<int64_t>();
  // Out-of-range values are clamped to something validate() will reject with its own message.
  return int(std::clamp<int64_t>(x, -(int64_t(1) << 30), int64_t(1) << 30));
}

Edge read_edge(const json& j, std::size_t i, const std::string& source) {
  // Until the id is known, errors name the edge by index only.
  std::string field = "edges[" + std::to_string(i) + "]";
  if (j.is_object() && j.contains("id") && j["id"].is_string())
    field += " (id " + json_quote(j["id"].get<std::string>()) + ")";
  ObjectReader r(j, field, source);
  Edge e;
  e.id = r.string("id");
  e.from = r.string("from");
  e.to = r.string("to");
  const std::string type = r.string("type");
  if (type == "identity")
    e.type = EdgeType::Identity;
  else if (type == "conv")
    e.type = EdgeType::Conv;
  else
    throw DnaError(source, r.path("type"),
                   json_quote(type) +
                       " is not an edge type; use \"identity\" "
                       "or \"conv\"");
  e.skip = r.boolean("skip");
  if (e.type == EdgeType::Identity) {
    r.reject_unknown("id, from, to, type, skip (identity edges have no conv settings)");
    return e;
  }
  e.depth_factor = r.number("depth_factor");
  const json& filter = r.array("filter");
  if (filter.size() != 2)
    throw DnaError(source, r.path("filter"),
                   "must be [height, width], two odd integers; it has " +
                       std::to_string(filter.size()) + " elements");
  e.filter_h = int_in_range(r.path("filter") + "[0]", filter[0], source);
  e.filter_w = int_in_range(r.path("filter") + "[1]", filter[1], source);
  // The stride is stored as a scale so a non-power-of-two cannot be written; "stride" is accepted
  // for people writing DNAs by hand and must agree.
  const bool has_scale = r.has("stride_scale"), has_stride = r.has("stride");
  if (!has_scale && !has_stride) r.get("stride_scale");  // reports it missing
  if (has_scale)
    e.stride_scale = int_in_range(r.path("stride_scale"), r.get("stride_scale"), source);
  if (has_stride) {
    const int stride = int_in_range(r.path("stride"), r.get("stride"), source);
    if (stride < 1 || (stride & (stride - 1)) != 0 || stride > (1 << kMaxStrideScale))
      throw DnaError(source, r.path("stride"),
                     std::to_string(stride) + " is not a power of two from 1 to " +
                         std::to_string(1 << kMaxStrideScale) + " (1, 2, 4, ...)");
    int scale = 0;
    while ((1 << scale) < stride) ++scale;
    if (has_scale && scale != e.stride_scale)
      throw DnaError(source, r.path("stride"),
                     std::to_string(stride) + " disagrees with stride_scale " +
                         std::to_string(e.stride_scale) + " (stride = 2^stride_scale); give one");
    e.stride_scale = scale;
  }
  r.reject_unknown("id, from, to, type, skip, depth_factor, filter, stride_scale (or stride)");
  return e;
}

}  // namespace

Dna dna_from_json(const json& j, const std::string& source_name) {
  ObjectReader r(j, "", source_name);
  const std::string format = r.string("format");
  if (format != kDnaFormat)
    throw DnaError(source_name, "format",
                   json_quote(format) + " is not a DNA format this evo reads; it reads " +
                       json_quote(kDnaFormat));
  Dna d;
  d.source = source_name;
  d.learning_rate = r.number("learning_rate");
  d.input = r.string("input");
  d.output = r.string("output");
  const json& vertices = r.array("vertices");
  for (std::size_t i = 0; i < vertices.size(); ++i) {
    std::string field = "vertices[" + std::to_string(i) + "]";
    if (vertices[i].is_object() && vertices[i].contains("id") && vertices[i]["id"].is_string())
      field += " (id " + json_quote(vertices[i]["id"].get<std::string>()) + ")";
    ObjectReader vr(vertices[i], field, source_name);
    Vertex v;
    v.id = vr.string("id");
    const std::string act = vr.string("activation");
    if (act == "linear")
      v.activation = Activation::Linear;
    else if (act == "bn_relu")
      v.activation = Activation::BnRelu;
    else
      throw DnaError(source_name, vr.path("activation"),
                     json_quote(act) + " is not an activation; use \"bn_relu\" or \"linear\"");
    vr.reject_unknown("id, activation");
    d.vertices.push_back(v);
  }
  const json& edges = r.array("edges");
  for (std::size_t i = 0; i < edges.size(); ++i)
    d.edges.push_back(read_edge(edges[i], i, source_name));
  d.next_id = r.has("next_id") ? r.integer("next_id") : smallest_next_id(d);
  r.reject_unknown("format, learning_rate, input, output, next_id, vertices, edges");
  validate(d);
  return d;
}

Dna parse_dna(const std::string& text, const std::string& source_name) {
  json j;
  try {
    j = parse_json_limited(text, source_name);
  } catch (const Error& e) {
    // "SOURCE: not valid JSON: ..." (a syntax error with line and column, a number out of range,
    // nesting deeper than kMaxJsonDepth): as a DnaError, without repeating the source.
    std::string what = e.what();
    if (what.rfind(source_name + ": ", 0) == 0) what = what.substr(source_name.size() + 2);
    throw DnaError(source_name, "", what);
  }
  return dna_from_json(j, source_name);
}

Dna load_dna(const std::string& path) {
  std::string text;
  try {
    text = read_file_limited(path, kMaxDnaFileBytes, "DNA file");
  } catch (const Error& e) {
    throw DnaError(path, "", std::string(e.what()).substr(std::string("DNA file ").size() +
                                                          path.size() + 2));
  }
  return parse_dna(text, path);
}

json dna_to_json(const Dna& d) {
  json j;
  j["format"] = kDnaFormat;
  j["learning_rate"] = d.learning_rate;
  j["input"] = d.input;
  j["output"] = d.output;
  j["next_id"] = d.next_id;
  j["vertices"] = json::array();
  for (const Vertex& v : d.vertices)
    j["vertices"].push_back({{"id", v.id}, {"activation", to_string(v.activation)}});
  j["edges"] = json::array();
  for (const Edge& e : d.edges) {
    json je = {{"id", e.id},
               {"from", e.from},
               {"to", e.to},
               {"type", to_string(e.type)},
               {"skip", e.skip}};
    if (e.type == EdgeType::Conv) {
      je["depth_factor"] = e.depth_factor;
      je["filter"] = {e.filter_h, e.filter_w};
      je["stride_scale"] = e.stride_scale;
    }
    j["edges"].push_back(je);
  }
  return j;
}

// Written by hand rather than json::dump(2) so each vertex and edge stays on one line: a DNA file
// reads as a list of layers. Scalars go through json::dump, which round-trips doubles exactly.
std::string to_json(const Dna& d) {
  auto num = [](double x) { return json(x).dump(); };
  std::ostringstream o;
  o << "{\n";
  o << "  \"format\": " << json_text(kDnaFormat) << ",\n";
  o << "  \"learning_rate\": " << num(d.learning_rate) << ",\n";
  o << "  \"input\": " << json_text(d.input) << ",\n";
  o << "  \"output\": " << json_text(d.output) << ",\n";
  o << "  \"next_id\": " << d.next_id << ",\n";
  o << "  \"vertices\": [";
  for (std::size_t i = 0; i < d.vertices.size(); ++i)
    o << (i ? ",\n" : "\n") << "    {\"id\": " << json_text(d.vertices[i].id)
      << ", \"activation\": " << json_text(to_string(d.vertices[i].activation)) << "}";
  o << (d.vertices.empty() ? "],\n" : "\n  ],\n");
  o << "  \"edges\": [";
  for (std::size_t i = 0; i < d.edges.size(); ++i) {
    const Edge& e = d.edges[i];
    o << (i ? ",\n" : "\n") << "    {\"id\": " << json_text(e.id)
      << ", \"from\": " << json_text(e.from) << ", \"to\": " << json_text(e.to)
      << ", \"type\": " << json_text(to_string(e.type))
      << ", \"skip\": " << (e.skip ? "true" : "false");
    if (e.type == EdgeType::Conv)
      o << ", \"depth_factor\": " << num(e.depth_factor) << ", \"filter\": [" << e.filter_h << ", "
        << e.filter_w << "], \"stride_scale\": " << e.stride_scale;
    o << "}";
  }
  o << (d.edges.empty() ? "]\n" : "\n  ]\n");
  o << "}\n";
  return o.str();
}

void save_dna(const Dna& dna, const std::string& path) {
  try {
    write_file_atomic(path, to_json(dna), "DNA file");
  } catch (const Error& e) {
    throw DnaError(path, "", std::string("cannot write the DNA file: ") + e.what());
  }
}

}  // namespace evo
