// Tests of the DNA: JSON round trips, shape inference, parameter and FLOP counts worked out by
// hand, and a table of invalid DNAs with the messages they must give. Not mutations or training.
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "evo/dna.h"
#include "support.h"

using namespace evo;
using nlohmann::json;

namespace {

std::string dna_path(const std::string& name) {
  return std::string(EVO_SOURCE_DIR) + "/data/dna/" + name;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int rand_int(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(test::rng());
}

// A random valid DNA: a backbone of convs and identities, random activations, forward skips.
Dna random_dna() {
  Dna d;
  d.learning_rate = std::uniform_real_distribution<double>(1e-4, 1.0)(test::rng());
  d.vertices.push_back({"v0", Activation::Linear});
  d.next_id = 1;
  const int length = rand_int(0, 7);
  for (int i = 0; i < length; ++i) {
    Vertex v{d.mint_id("v"), rand_int(0, 1) ? Activation::BnRelu : Activation::Linear};
    Edge e;
    e.id = d.mint_id("e");
    e.from = d.vertices.back().id;
    e.to = v.id;
    if (rand_int(0, 3)) {
      e.type = EdgeType::Conv;
      e.depth_factor = std::uniform_real_distribution<double>(0.3, 2.0)(test::rng());
      e.filter_h = 2 * rand_int(0, 3) + 1;
      e.filter_w = 2 * rand_int(0, 3) + 1;
      e.stride_scale = rand_int(0, 2);
    }
    d.vertices.push_back(v);
    d.edges.push_back(e);
  }
  for (int k = rand_int(0, length); k > 0; --k) {
    const int a = rand_int(0, length), b = rand_int(0, length);
    if (a == b) continue;
    Edge s;
    s.id = d.mint_id("s");
    s.from = d.vertices[std::min(a, b)].id;
    s.to = d.vertices[std::max(a, b)].id;
    s.skip = true;
    bool duplicate = false;
    for (const Edge& e : d.edges) duplicate |= e.skip && e.from == s.from && e.to == s.to;
    if (!duplicate) d.edges.push_back(s);
  }
  // Ids need not be in order in the file: shuffle both lists.
  std::shuffle(d.vertices.begin() + 1, d.vertices.end(), test::rng());
  std::shuffle(d.edges.begin(), d.edges.end(), test::rng());
  d.input = "v0";
  d.output = length ? "v" + std::to_string(2 * length - 1) : "v0";
  return d;
}

// A small valid DNA as JSON, for the table of broken variants: v0 -conv-> v1 -conv-> v2, skip
// v0->v2.
json base_json() {
  return json::parse(R"({
    "format": "evo-dna/1", "learning_rate": 0.1, "input": "v0", "output": "v2", "next_id": 6,
    "vertices": [{"id": "v0", "activation": "linear"}, {"id": "v1", "activation": "bn_relu"},
                 {"id": "v2", "activation": "linear"}],
    "edges": [
      {"id": "e3", "from": "v0", "to": "v1", "type": "conv", "skip": false, "depth_factor": 8.0,
       "filter": [3, 3], "stride_scale": 0},
      {"id": "e4", "from": "v1", "to": "v2", "type": "conv", "skip": false, "depth_factor": 2.0,
       "filter": [5, 1], "stride_scale": 1},
      {"id": "e5", "from": "v0", "to": "v2", "type": "identity", "skip": true}]})");
}

}  // namespace

TEST_CASE("reference DNAs round-trip byte for byte", "[dna]") {
  for (const char* name : {"initial.json", "four_conv.json", "skips.json"}) {
    INFO(name);
    const std::string text = read_text(dna_path(name));
    REQUIRE(!text.empty());
    const Dna d = load_dna(dna_path(name));
    CHECK(to_json(d) == text);
    CHECK(parse_dna(to_json(d)) == d);
    CHECK(dna_from_json(dna_to_json(d)) == d);
  }
  CHECK(load_dna(dna_path("initial.json")) == initial_dna());
}

TEST_CASE("random DNAs round-trip through JSON and compile", "[dna]") {
  for (int trial = 0; trial < 50; ++trial) {
    const Dna d = random_dna();
    const std::string text = to_json(d);
    INFO(text);
    const Dna back = parse_dna(text);
    CHECK(back == d);
    CHECK(to_json(back) == text);
    const CompiledDna plan = compile(d, rand_int(1, 40), rand_int(1, 40), rand_int(1, 3), 10);
    CHECK(plan.vertices.size() == d.vertices.size());
    CHECK(plan.edges.size() == d.edges.size());
    // Every edge runs after its source vertex.
    for (const EdgePlan& e : plan.edges) CHECK(e.from < e.to);
  }
}

TEST_CASE("\"stride\" is accepted beside or instead of stride_scale", "[dna]") {
  json j = base_json();
  j["edges"][1].erase("stride_scale");
  j["edges"][1]["stride"] = 4;
  CHECK(parse_dna(j.dump()).edges[1].stride_scale == 2);
  j["edges"][1]["stride_scale"] = 2;
  CHECK(parse_dna(j.dump()).edges[1].stride() == 4);
}

TEST_CASE("four_conv.json on 28x28x1: shapes, parameters and FLOPs by hand", "[dna]") {
  const CompiledDna p = compile(load_dna(dna_path("four_conv.json")), 28, 28, 1, 10);
  REQUIRE(p.vertices.size() == 5);
  REQUIRE(p.edges.size() == 4);
  const ActShape expect[] = {{28, 28, 1}, {28, 28, 32}, {14, 14, 64}, {14, 14, 64}, {7, 7, 128}};
  for (int i = 0; i < 5; ++i) {
    CHECK(p.vertices[i].id == "v" + std::to_string(i));
    CHECK(p.vertices[i].shape == expect[i]);
  }
  // Filters [C_out, 3, 3, C_in]; batch norm gamma + beta on v1..v4; fc 128 -> 10 with bias.
  const int64_t conv_params = 32 * 3 * 3 * 1 + 64 * 3 * 3 * 32 + 64 * 3 * 3 * 64 + 128 * 3 * 3 * 64;
  const int64_t bn_params = 2 * (32 + 64 + 64 + 128);
  const int64_t fc_params = 128 * 10 + 10;
  CHECK(p.param_count == conv_params + bn_params + fc_params);
  CHECK(p.param_count == 131178);
  CHECK(p.state_count == bn_params);
  // 2 FLOPs per multiply-add: output pixels x C_out x (3 x 3 x C_in).
  const double conv_flops = 2.0 * (28 * 28 * 32 * 9 * 1 + 14 * 14 * 64 * 9 * 32 +
                                   14 * 14 * 64 * 9 * 64 + 7 * 7 * 128 * 9 * 64);
  CHECK(p.forward_flops == conv_flops + 2.0 * 128 * 10);
  CHECK(p.train_flops == 3 * p.forward_flops);
  CHECK(p.edges[1].stride == 2);
  CHECK(p.edges[1].params == 64 * 3 * 3 * 32);

  // Weight keys and shapes.
  const ParamInfo* w = p.find_param("e6");
  REQUIRE(w);
  CHECK(w->shape == std::vector<int64_t>{64, 3, 3, 32});
  CHECK(w->kind == ParamKind::ConvFilter);
  REQUIRE(p.find_param("v4.running_var"));
  CHECK(p.find_param("v4.running_var")->shape == std::vector<int64_t>{128});
  CHECK(!p.find_param("v4.running_var")->trainable());
  CHECK(!p.find_param("v0.gamma"));  // the input is linear: no batch norm
  REQUIRE(p.find_param("fc.weight"));
  CHECK(p.find_param("fc.weight")->shape == std::vector<int64_t>{10, 128});
  CHECK(p.find_param("fc.bias")->shape == std::vector<int64_t>{10});
  CHECK(p.params.size() == 4 + 4 * 4 + 2);

  const std::string text = describe(p);
  for (const char* s :
       {"28x28x32", "7x7x128", "131,178", "conv 3x3 stride 2", "global average pool"})
    CHECK(text.find(s) != std::string::npos);
  const std::string dot = to_dot(p);
  CHECK(dot.find("digraph") != std::string::npos);
  CHECK(dot.find("\"v3\" -> \"v4\"") != std::string::npos);
}

TEST_CASE("four_conv.json on random input shapes", "[dna]") {
  const Dna d = load_dna(dna_path("four_conv.json"));
  for (int trial = 0; trial < 20; ++trial) {
    const int h = rand_int(1, 70), w = rand_int(1, 70), c = rand_int(1, 5), k = rand_int(1, 100);
    const CompiledDna p = compile(d, h, w, c, k);
    // 'same' padding: a stride-2 conv halves the size, rounding up.
    const int h2 = int(std::ceil(h / 2.0)), w2 = int(std::ceil(w / 2.0));
    const int h4 = int(std::ceil(h2 / 2.0)), w4 = int(std::ceil(w2 / 2.0));
    const int c1 = 32 * c, c2 = 2 * c1, c4 = 2 * c2;
    CHECK(p.vertices[4].shape == ActShape{h4, w4, c4});
    const double flops = 2.0 * (double(h) * w * c1 * 9 * c + double(h2) * w2 * c2 * 9 * c1 +
                                double(h2) * w2 * c2 * 9 * c2 + double(h4) * w4 * c4 * 9 * c2) +
                         2.0 * c4 * k;
    CHECK(p.forward_flops == flops);
    CHECK(p.param_count == int64_t(9) * (c1 * c + c2 * c1 + c2 * c2 + c4 * c2) +
                               2 * (c1 + c2 + c2 + c4) + (c4 + 1) * k);
  }
}

TEST_CASE("skips.json: the mismatch rule resizes and pads or truncates skips", "[dna]") {
  const CompiledDna p = compile(load_dna(dna_path("skips.json")), 28, 28, 1, 100);
  auto vshape = [&](const char* id) { return p.vertices[p.vertex_index(id)].shape; };
  CHECK(vshape("v1") == ActShape{28, 28, 16});
  CHECK(vshape("v2") == ActShape{14, 14, 32});
  CHECK(vshape("v3") == ActShape{14, 14, 32});  // 5x3 filter, stride 1
  CHECK(vshape("v4") == ActShape{7, 7, 64});
  CHECK(vshape("v5") == ActShape{7, 7, 16});  // depth factor 0.25
  CHECK(vshape("v6") == ActShape{7, 7, 16});
  auto edge = [&](const char* id) { return p.edges[p.edge_index(id)]; };
  CHECK(edge("e13").out == ActShape{28, 28, 16});
  CHECK(edge("e13").reshaped == ActShape{14, 14, 32});  // nearest down, zero-pad channels
  CHECK(edge("e14").reshaped == ActShape{7, 7, 64});
  CHECK(edge("e15").out.c == 32);
  CHECK(edge("e15").reshaped == ActShape{7, 7, 16});  // truncated channels
  CHECK(edge("e15").resizes_channels());
  CHECK(edge("e9").params == 32 * 5 * 3 * 32);
  // Execution order: the backbone edge of each vertex comes first.
  const VertexPlan& v4 = p.vertices[p.vertex_index("v4")];
  REQUIRE(v4.in_edges.size() == 2);
  CHECK(p.edges[v4.in_edges[0]].id == "e10");
  CHECK(p.edges[v4.in_edges[1]].id == "e14");
  CHECK(p.find_param("fc.weight")->shape == std::vector<int64_t>{100, 16});
  CHECK(describe(p).find("truncate 32->16") != std::string::npos);
  CHECK(to_dot(p).find("style=dashed") != std::string::npos);
}

TEST_CASE("the initial individual is global pool + fully connected", "[dna]") {
  const CompiledDna p = compile(initial_dna(), 32, 32, 3, 10);
  CHECK(p.vertices.size() == 1);
  CHECK(p.edges.empty());
  CHECK(p.param_count == 3 * 10 + 10);
  CHECK(p.forward_flops == 2.0 * 3 * 10);
  CHECK(p.output().shape == ActShape{32, 32, 3});
}

TEST_CASE("depth factors round to at least one channel", "[dna]") {
  Dna d = initial_dna();
  Edge e;
  e.id = d.mint_id("e");
  e.from = "v0";
  e.to = d.mint_id("v");
  e.type = EdgeType::Conv;
  d.vertices.push_back({e.to, Activation::BnRelu});
  d.edges.push_back(e);
  d.output = e.to;
  CHECK(e.id == "e1");
  CHECK(d.next_id == 3);
  const std::pair<double, int> cases[] = {{0.3, 3}, {0.01, 1}, {0.25, 3}, {0.26, 3}, {1.5, 15}};
  for (const auto& [factor, channels] : cases) {
    d.edges[0].depth_factor = factor;
    CHECK(compile(d, 8, 8, 10, 2).output().shape.c == channels);
  }
}

TEST_CASE("invalid DNAs give errors naming the field and the reason", "[dna]") {
  struct Case {
    const char* what;
    std::function<void(json&)> change;
    const char* field;   // fragment of DnaError::field()
    const char* reason;  // fragment of DnaError::reason()
  };
  const std::vector<Case> cases = {
      {"backward skip makes a cycle",
       [](json& j) { j["edges"][2]["from"] = "v2", j["edges"][2]["to"] = "v1"; }, "edges", "cycle"},
      {"self loop", [](json& j) { j["edges"][1]["from"] = "v2"; }, "edges", "cycle v2 -> v2"},
      {"dangling edge end", [](json& j) { j["edges"][1]["to"] = "v9"; }, "edges[1] (id \"e4\").to",
       "\"v9\" is not the id of any vertex"},
      {"dangling edge start", [](json& j) { j["edges"][0]["from"] = "x"; },
       "edges[0] (id \"e3\").from", "not the id of any vertex"},
      {"dangling output", [](json& j) { j["output"] = "v7"; }, "output",
       "not the id of any vertex"},
      {"duplicate edge id", [](json& j) { j["edges"][2]["id"] = "e3"; }, "edges[2]",
       "duplicate id \"e3\""},
      {"vertex and edge share an id", [](json& j) { j["edges"][2]["id"] = "v1"; }, "edges[2]",
       "duplicate id \"v1\""},
      {"bad id characters", [](json& j) { j["edges"][2]["id"] = "e.5"; }, ".id", "contains \".\""},
      {"reserved id", [](json& j) { j["edges"][2]["id"] = "fc"; }, ".id", "reserved"},
      {"even filter", [](json& j) { j["edges"][0]["filter"][0] = 4; }, "(id \"e3\").filter[0]",
       "is even"},
      {"zero filter", [](json& j) { j["edges"][0]["filter"][1] = 0; }, "filter[1]",
       "is not positive"},
      {"negative filter", [](json& j) { j["edges"][0]["filter"][0] = -3; }, "filter[0]",
       "not positive"},
      {"huge filter", [](json& j) { j["edges"][0]["filter"][0] = 65; }, "filter[0]", "too large"},
      {"filter with one size", [](json& j) { j["edges"][0]["filter"] = json::array({3}); },
       "filter", "two odd integers"},
      {"negative stride scale", [](json& j) { j["edges"][0]["stride_scale"] = -1; }, "stride_scale",
       "out of range"},
      {"stride not a power of two",
       [](json& j) { j["edges"][0].erase("stride_scale"), j["edges"][0]["stride"] = 3; }, "stride",
       "not a power of two"},
      {"stride disagrees with scale", [](json& j) { j["edges"][0]["stride"] = 2; }, "stride",
       "disagrees"},
      {"depth factor 0", [](json& j) { j["edges"][0]["depth_factor"] = 0; }, "depth_factor",
       "not a finite number"},
      {"negative depth factor", [](json& j) { j["edges"][0]["depth_factor"] = -2.0; },
       "depth_factor", "(0, 4096]"},
      {"absurd depth factor", [](json& j) { j["edges"][0]["depth_factor"] = 1e6; }, "depth_factor",
       "(0, 4096]"},
      {"unknown format", [](json& j) { j["format"] = "evo-dna/2"; }, "format",
       "\"evo-dna/2\" is not a DNA format"},
      {"missing format", [](json& j) { j.erase("format"); }, "format", "is missing"},
      {"missing learning rate", [](json& j) { j.erase("learning_rate"); }, "learning_rate",
       "is missing"},
      {"missing filter", [](json& j) { j["edges"][1].erase("filter"); }, "(id \"e4\").filter",
       "is missing"},
      {"learning rate as string", [](json& j) { j["learning_rate"] = "0.1"; }, "learning_rate",
       "must be a number"},
      {"skip as string", [](json& j) { j["edges"][2]["skip"] = "yes"; }, "skip",
       "must be true or false"},
      {"fractional filter", [](json& j) { j["edges"][0]["filter"][0] = 3.5; }, "filter[0]",
       "must be an integer"},
      {"edges not an array", [](json& j) { j["edges"] = json::object(); }, "edges",
       "must be an array"},
      {"vertex not an object", [](json& j) { j["vertices"][1] = "v1"; }, "vertices[1]",
       "must be a JSON object"},
      {"unknown field (typo)", [](json& j) { j["edges"][0]["stride_scal"] = 1; }, "stride_scal",
       "unknown field"},
      {"conv setting on identity",
       [](json& j) {
         j["edges"][2]["filter"] = json::array({3, 3});
       },
       "(id \"e5\").filter", "unknown field"},
      {"unknown activation", [](json& j) { j["vertices"][1]["activation"] = "relu"; }, "activation",
       "not an activation"},
      {"unknown edge type", [](json& j) { j["edges"][1]["type"] = "pool"; }, "type",
       "not an edge type"},
      {"input with batch norm", [](json& j) { j["vertices"][0]["activation"] = "bn_relu"; },
       "input", "must have activation \"linear\""},
      {"zero learning rate", [](json& j) { j["learning_rate"] = 0; }, "learning_rate",
       "finite number > 0"},
      {"negative learning rate", [](json& j) { j["learning_rate"] = -0.5; }, "learning_rate",
       "> 0"},
      {"two backbone in-edges", [](json& j) { j["edges"][2]["skip"] = false; }, "edges[",
       "second backbone in-edge"},
      {"conv skip",
       [](json& j) {
         j["edges"][2]["type"] = "conv", j["edges"][2]["depth_factor"] = 1.0,
         j["edges"][2]["filter"] = json::array({1, 1}), j["edges"][2]["stride_scale"] = 0;
       },
       "(id \"e5\").type", "must be \"identity\""},
      {"vertex off the backbone",
       [](json& j) {
         j["vertices"].push_back({{"id", "v9"}, {"activation", "linear"}}), j["next_id"] = 10;
       },
       "vertices[3] (id \"v9\")", "not on the backbone"},
      {"backbone never reaches the output", [](json& j) { j["edges"].erase(1); }, "output",
       "stops at \"v1\" and never reaches the output \"v2\""},
      {"output before the end", [](json& j) { j["output"] = "v1"; }, "edges[1]",
       "continues past the output"},
      {"edge into the input",
       [](json& j) { j["input"] = "v1", j["vertices"][1]["activation"] = "linear"; },
       "edges[0] (id \"e3\").to", "enters the input vertex"},
      {"duplicate skip",
       [](json& j) {
         j["edges"].push_back(
             {{"id", "e6"}, {"from", "v0"}, {"to", "v2"}, {"type", "identity"}, {"skip", true}}),
             j["next_id"] = 7;
       },
       "edges[3]", "duplicates skip edge \"e5\""},
      {"next_id too small", [](json& j) { j["next_id"] = 5; }, "next_id", "at least 6"},
      {"negative next_id", [](json& j) { j["next_id"] = -1; }, "next_id", "at least 6"},
      {"no vertices", [](json& j) { j["vertices"] = json::array(); }, "vertices", "is empty"},
  };
  for (const Case& c : cases) {
    json j = base_json();
    c.change(j);
    INFO(c.what << ": " << j.dump());
    try {
      parse_dna(j.dump(), "bad.json");
      FAIL("no error");
    } catch (const DnaError& e) {
      INFO(e.what());
      CHECK(e.source() == "bad.json");
      CHECK(e.field().find(c.field) != std::string::npos);
      CHECK(e.reason().find(c.reason) != std::string::npos);
      CHECK(std::string(e.what()).find("bad.json: ") == 0);
    }
  }
  // The unchanged base is valid, so each error above comes from its one change.
  CHECK_NOTHROW(parse_dna(base_json().dump()));
}

TEST_CASE("errors outside the field table", "[dna]") {
  // Not JSON at all: the message keeps nlohmann's line and column.
  try {
    parse_dna("{\"format\": \"evo-dna/1\",", "cut.json");
    FAIL("no error");
  } catch (const DnaError& e) {
    CHECK(std::string(e.what()).find("cut.json: not valid JSON") == 0);
  }
  CHECK_THROWS_AS(load_dna("/nonexistent/dna.json"), DnaError);
  // NaN and infinity cannot be written in JSON but can reach validate() from code.
  Dna d = parse_dna(base_json().dump());
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    d.edges[0].depth_factor = bad;
    CHECK_THROWS_WITH(validate(d),
                      Catch::Contains("depth_factor") && Catch::Contains("not a finite"));
    d.edges[0].depth_factor = 1.0;
    d.learning_rate = bad;
    CHECK_THROWS_WITH(validate(d), Catch::Contains("learning_rate"));
    d.learning_rate = 0.1;
  }
  // 1e999 overflows to infinity when parsed.
  json j = base_json();
  std::string text = j.dump();
  text.replace(text.find("8.0"), 3, "1e999");
  CHECK_THROWS_AS(parse_dna(text), DnaError);
}

// Hostile input (issue: nothing crashes, nothing reads without bound): each case a DnaError that
// names the file and says what is wrong, within bounded stack, memory and time.
TEST_CASE("hostile DNA input gives a bounded, readable DnaError", "[dna]") {
  const std::string dir = test::temp_dir("dna-hostile");
  // 100,000 nested arrays in a field: parsing stops at the depth limit, nothing recurses.
  const std::string deep = "{\"format\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  CHECK_THROWS_WITH(parse_dna(deep, "deep.json"),
                    Catch::StartsWith("deep.json") && Catch::Contains("nested more than 64"));
  // Nested just within the limit, in a field whose type error prints the value: printed, cut.
  const std::string ok_deep = "{\"format\":" + std::string(60, '[') + std::string(60, ']') + "}";
  CHECK_THROWS_WITH(parse_dna(ok_deep, "d.json"), Catch::Contains("format") &&
                                                       Catch::Contains("must be"));
  // A 10 MB value is not echoed whole.
  json j = base_json();
  j["learning_rate"] = std::string(10'000'000, 'x');
  try {
    parse_dna(j.dump(), "big.json");
    FAIL("no error");
  } catch (const DnaError& e) {
    CHECK(std::string(e.what()).size() < 400);
    CHECK(std::string(e.what()).find("characters)") != std::string::npos);
  }
  // An id that is not valid UTF-8, or not ASCII: a DnaError about the id, not a JSON type error.
  for (const std::string& bad : {std::string("v\xff\xfe"), std::string("v\xc3\xa9")}) {
    Dna d = parse_dna(base_json().dump());
    d.vertices[1].id = bad;
    CHECK_THROWS_WITH(validate(d), Catch::Contains(".id") && Catch::Contains("letters, digits"));
    std::string text = base_json().dump();
    text.replace(text.find("\"v1\""), 4, "\"" + bad + "\"");
    CHECK_THROWS_AS(parse_dna(text, "utf8.json"), DnaError);
  }
  // The id counter at its top cannot overflow when minting.
  j = base_json();
  j["next_id"] = std::numeric_limits<int64_t>::max();
  CHECK_THROWS_WITH(parse_dna(j.dump(), "n.json"), Catch::Contains("next_id"));
  // More vertices than a DNA may have (an identity chain): refused at once.
  j = base_json();
  for (int i = 0; i <= kMaxVertices; ++i) j["vertices"].push_back({{"id", "c" + std::to_string(i)},
                                                                    {"activation", "linear"}});
  CHECK_THROWS_WITH(parse_dna(j.dump(), "wide.json"), Catch::Contains("at most 10000"));
  // Not a regular file, or too big: refused before reading. /dev/zero would never end.
  CHECK_THROWS_WITH(load_dna("/dev/zero"), Catch::StartsWith("/dev/zero") &&
                                              Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(load_dna(dir), Catch::Contains("is a directory"));
  const std::string sparse = dir + "/huge.json";
  {
    std::ofstream f(sparse, std::ios::binary);
    f.seekp(std::streamoff(kMaxDnaFileBytes) + 10);
    f.put('}');
  }
  CHECK_THROWS_WITH(load_dna(sparse), Catch::StartsWith(sparse) && Catch::Contains("more than"));
  CHECK_THROWS_WITH(load_dna(dir + "/missing.json"), Catch::Contains("no such file"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("compile rejects absurd channel counts and exceeded budgets", "[dna]") {
  const Dna d = parse_dna(base_json().dump(), "b.json");
  // e3 multiplies 3 channels by 8, e4 by 2: 48 channels. A factor of 200 on e4 gives 4800 > 4096.
  Dna wide = d;
  wide.edges[1].depth_factor = 200;
  CHECK_THROWS_WITH(compile(wide, 16, 16, 3, 10),
                    Catch::Contains("edges[1] (id \"e4\").depth_factor") &&
                        Catch::Contains("4,800") && Catch::Contains("4096"));
  CHECK_NOTHROW(compile(wide, 16, 16, 1, 10));  // 1 x 8 x 200 = 1600 channels is fine

  const CompiledDna p = compile(d, 16, 16, 3, 10);
  Budget b;
  b.max_params = p.param_count;
  CHECK_NOTHROW(compile(d, 16, 16, 3, 10, b));
  b.max_params = p.param_count - 1;
  CHECK_THROWS_WITH(compile(d, 16, 16, 3, 10, b), Catch::Contains("max_params"));
  b = {};
  b.max_flops_per_image = p.forward_flops - 1;
  CHECK_THROWS_WITH(compile(d, 16, 16, 3, 10, b), Catch::Contains("max_flops_per_image"));
  b = {};
  b.max_activation_bytes = p.activation_bytes - 1;
  CHECK_THROWS_WITH(compile(d, 16, 16, 3, 10, b), Catch::Contains("max_activation_bytes"));
  CHECK_THROWS_AS(compile(d, 0, 16, 3, 10), DnaError);
  CHECK_THROWS_AS(compile(d, 16, 16, 3, 0), DnaError);
}

TEST_CASE("activation bytes follow the documented rule", "[dna]") {
  const CompiledDna p = compile(parse_dna(base_json().dump()), 16, 16, 3, 10);
  // v0 16x16x3; e3 conv -> 16x16x24 (kept), v1 bn_relu value + pre-activation; e4 5x1 stride 2 ->
  // 8x8x48 (kept); skip e5 16x16x3 reshaped to 8x8x48 (kept); v2 linear; pooled 48; logits 10.
  const int64_t floats = 16 * 16 * 3 + 16 * 16 * 24 + 2 * 16 * 16 * 24 + 8 * 8 * 48 + 8 * 8 * 48 +
                         8 * 8 * 48 + 48 + 10;
  CHECK(p.activation_bytes == 4 * floats);
}
