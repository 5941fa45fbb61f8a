// Tests of the HTML run report: its content (plots, one dot per individual, the table, escaping),
// the accuracy-against-parameters plot (its Pareto front against a brute-force one, the limit
// line), write_report on a real run folder, the page as headless Chromium renders it, and the
// comparison page of several runs (grouping, statistics, escaping). Not the search.
#include <stb/stb_image.h>  // the implementation is compiled into evo_core (src/data_folder.cpp)

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "evo/dna.h"
#include "evo/population.h"
#include "evo/report.h"
#include "support.h"

using namespace evo;
namespace fs = std::filesystem;

namespace {

const std::string kSkipsDna = std::string(EVO_SOURCE_DIR) + "/data/dna/skips.json";
// skips.json's vertices by activation (v1 v2 v4 v5 bn_relu; v0 v3 v6 linear).
constexpr int kSkipsBnRelu = 4, kSkipsLinear = 3;
constexpr double kT0 = 1.7e9;  // the synthetic runs' first birth (unix seconds)

// A fresh folder under the system temp folder, removed with everything in it at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("evo_test_report_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(test::rng()() % 1000000000));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The part of the page from `<svg ... id="ID"` to its `</svg>`.
std::string svg_of(const std::string& html, const std::string& id) {
  const std::size_t at = html.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  const std::size_t start = html.rfind("<svg", at);
  const std::size_t end = html.find("</svg>", at);
  return end == std::string::npos ? "" : html.substr(start, end - start);
}

// HTML escaping written again here, so the test does not trust the page's own.
std::string html_escaped(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '&')
      o += "&amp;";
    else if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '"')
      o += "&quot;";
    else if (c == '\'')
      o += "&#39;";
    else
      o += c;
  }
  return o;
}

double uniform(double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(test::rng());
}

// A synthetic run in memory: `n` individuals born over five hours (ten initial ones at once),
// random fitness, the latest `alive` of them alive, every 17th a failed child. The best has id
// `best_id` and fitness 0.97 (above every random one).
struct Synthetic {
  std::vector<IndividualRecord> records;
  int alive = 0, dead = 0, failed_alive = 0, failed_dead = 0;
};

Synthetic synthetic_run(int n, int alive, const std::string& best_id) {
  Synthetic s;
  std::vector<double> births;
  for (int i = 0; i < n; ++i) births.push_back(i < 10 ? kT0 : kT0 + uniform(60, 5 * 3600));
  std::sort(births.begin(), births.end());
  for (int i = 0; i < n; ++i) {
    IndividualRecord r;
    r.id = i == n / 2 ? best_id : "ind-" + std::to_string(i);
    r.parent = i < 10 ? "" : "ind-" + std::to_string(i / 2);
    r.mutation = i < 10 ? "initial" : "INSERT-CONVOLUTION";
    r.detail = i < 10 ? "" : "at v" + std::to_string(i % 7);
    r.birth_time = births[std::size_t(i)];
    r.fitness = i == n / 2 ? 0.97 : uniform(0.1, 0.9);
    r.test_accuracy = r.fitness - 0.01;
    r.failed = i % 17 == 16;
    if (r.failed) r.fitness = 0, r.failure = "loss became NaN";
    const bool is_alive = i >= n - alive;
    r.death_time = is_alive ? NAN : r.birth_time + 60;
    r.flops = uniform(1e12, 1e13) * (1 + i);
    r.params = int64_t(uniform(1e3, 1e6));
    r.steps = 1000;
    r.worker = "cpu/0";
    r.host = "test-host";
    r.train_seconds = 30;
    r.learning_rate = 0.1;
    (r.failed ? (is_alive ? s.failed_alive : s.failed_dead) : (is_alive ? s.alive : s.dead))++;
    s.records.push_back(r);
  }
  return s;
}

ReportOptions options_with_dna() {
  ReportOptions o;
  o.title = "synthetic run";
  o.best_dna = load_dna(kSkipsDna);
  o.generated_at = kT0 + 6 * 3600;
  return o;
}

// ---- screenshot helpers ------------------------------------------------------------------------

struct Rgb {
  int r, g, b;
};

Rgb parse_colour(const char* hex) {  // "#1f77b4"
  const unsigned v = unsigned(std::stoul(std::string(hex + 1), nullptr, 16));
  return {int(v >> 16 & 255), int(v >> 8 & 255), int(v & 255)};
}

struct Image {
  int w = 0, h = 0;
  std::vector<unsigned char> rgb;  // [h, w, 3]
  bool is(int x, int y, Rgb c, int tol = 6) const {
    const unsigned char* p = &rgb[(std::size_t(y) * w + x) * 3];
    return std::abs(p[0] - c.r) <= tol && std::abs(p[1] - c.g) <= tol &&
           std::abs(p[2] - c.b) <= tol;
  }
};

Image load_png(const fs::path& path) {
  Image im;
  int n = 0;
  unsigned char* data = stbi_load(path.c_str(), &im.w, &im.h, &n, 3);
  if (!data) return im;
  im.rgb.assign(data, data + std::size_t(im.w) * im.h * 3);
  stbi_image_free(data);
  return im;
}

// Pixels of one colour: how many, their mean column and row.
struct Found {
  std::size_t pixels = 0;
  double mean_x = 0, mean_y = 0;
};

Found find_colour(const Image& im, Rgb c, int y0 = 0, int y1 = 1 << 30) {
  Found f;
  for (int y = std::max(y0, 0); y < std::min(y1, im.h); ++y)
    for (int x = 0; x < im.w; ++x)
      if (im.is(x, y, c)) ++f.pixels, f.mean_x += x, f.mean_y += y;
  if (f.pixels) f.mean_x /= double(f.pixels), f.mean_y /= double(f.pixels);
  return f;
}

// The first row at or below y0 with a pixel of colour c; im.h when none.
int first_row(const Image& im, Rgb c, int y0) {
  for (int y = std::max(y0, 0); y < im.h; ++y)
    for (int x = 0; x < im.w; ++x)
      if (im.is(x, y, c)) return y;
  return im.h;
}

// Connected regions (4-neighbour) of one colour with at least `min_area` pixels: the DNA's vertex
// boxes (their text makes holes, not cuts).
int count_blobs(const Image& im, Rgb c, std::size_t min_area) {
  std::vector<char> seen(std::size_t(im.w) * im.h, 0);
  int blobs = 0;
  std::vector<int> stack;
  for (int start = 0; start < im.w * im.h; ++start) {
    if (seen[std::size_t(start)] || !im.is(start % im.w, start / im.w, c)) continue;
    std::size_t area = 0;
    stack.push_back(start);
    seen[std::size_t(start)] = 1;
    while (!stack.empty()) {
      const int p = stack.back();
      stack.pop_back();
      ++area;
      const int x = p % im.w, y = p / im.w;
      const int next[4][2] = {{x - 1, y}, {x + 1, y}, {x, y - 1}, {x, y + 1}};
      for (auto [nx, ny] : next) {
        if (nx < 0 || ny < 0 || nx >= im.w || ny >= im.h) continue;
        const int q = ny * im.w + nx;
        if (!seen[std::size_t(q)] && im.is(nx, ny, c)) seen[std::size_t(q)] = 1, stack.push_back(q);
      }
    }
    blobs += area >= min_area;
  }
  return blobs;
}

std::string find_chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (fs::exists(p)) return p;
  return "";
}

// Runs headless Chromium on a local page; output goes to `log` (stdout too, for --dump-dom).
// A private profile folder lets tests run in parallel; `timeout` bounds a hung browser.
int run_chromium(const std::string& chromium, const std::string& args, const fs::path& page,
                 const fs::path& profile, const fs::path& log, const fs::path& out = {}) {
  const std::string cmd = "timeout 90 " + chromium +
                          " --headless --disable-gpu --no-sandbox --hide-scrollbars "
                          "--no-first-run --user-data-dir=" +
                          profile.string() + " " + args + " file://" + page.string() +
                          (out.empty() ? "" : " >" + out.string()) + " 2>" + log.string();
  return std::system(cmd.c_str());
}

}  // namespace

TEST_CASE("report: every plot, every individual, the best first, odd text escaped", "[report]") {
  const std::string odd_id = "best<i>&\"'x";
  const Synthetic run = synthetic_run(150, 40, odd_id);
  ReportOptions opts = options_with_dna();
  opts.settings = {{"data", "fashion<mnist>"}};
  const std::string html = render_report(run.records, opts);

  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  // Self-contained: no script, nothing to fetch.
  CHECK(count(html, "<script") == 0);
  CHECK(count(html, "src=") == 0);
  CHECK(count(html, "<link") == 0);
  CHECK(count(html, "https:") == 0);
  CHECK(count(html, "<svg") == 5);  // Figure 1, best vs time and vs FLOPs, vs params, the DNA

  // Figure 1: one circle per individual, split by state, failed ones marked.
  const std::string fig = svg_of(html, "fig-population");
  REQUIRE(!fig.empty());
  CHECK(count(fig, "<circle class=\"alive\"") == std::size_t(run.alive));
  CHECK(count(fig, "<circle class=\"dead\"") == std::size_t(run.dead));
  CHECK(count(fig, "<circle class=\"alive failed\"") == std::size_t(run.failed_alive));
  CHECK(count(fig, "<circle class=\"dead failed\"") == std::size_t(run.failed_dead));
  CHECK(count(fig, "<circle class=\"") - count(fig, "<circle class=\"key\"") == run.records.size());
  CHECK(run.failed_alive + run.failed_dead > 0);
  CHECK(fig.find("alive (" + std::to_string(run.alive) + ")") != std::string::npos);

  // Both best-so-far plots have a curve, the FLOP one on a log axis.
  CHECK(count(svg_of(html, "fig-best-time"), "class=\"best-line\"") == 1);
  const std::string flops = svg_of(html, "fig-best-flops");
  CHECK(count(flops, "class=\"best-line\"") == 1);
  CHECK(count(flops, "10<tspan") >= 2);

  // The DNA graph: every vertex with its shape for 28x28x1, conv labels, skip arcs.
  const std::string dna = svg_of(html, "fig-dna");
  CHECK(count(dna, "<g class=\"vertex bn_relu\"") == std::size_t(kSkipsBnRelu));
  CHECK(count(dna, "<g class=\"vertex linear\"") == std::size_t(kSkipsLinear));
  CHECK(count(dna, "<path class=\"skip\"") == 4);
  CHECK(dna.find(">28x28x16<") != std::string::npos);
  CHECK(dna.find(">3x3 s2 x2.0<") != std::string::npos);
  CHECK(dna.find(">1x1 s1 x0.25<") != std::string::npos);
  CHECK(dna.find(">identity<") != std::string::npos);

  // The table: the best individual first, escaped; the header's totals.
  const std::string escaped = "best&lt;i&gt;&amp;&quot;&#39;x";
  CHECK(html.find(odd_id) == std::string::npos);
  CHECK(html.find("fashion&lt;mnist&gt;") != std::string::npos);
  const std::size_t table = html.find("<table id=\"top\"");
  REQUIRE(table != std::string::npos);
  const std::size_t first_row = html.find("<td>1</td>", table);
  REQUIRE(first_row != std::string::npos);
  CHECK(html.substr(first_row, 100).find(escaped) != std::string::npos);
  CHECK(html.substr(first_row, 200).find("97.00%") != std::string::npos);
  CHECK(count(html.substr(table), "<tr") == 1 + 20);  // header + opts.top rows
  const std::size_t totals = html.find("id=\"totals\"");
  REQUIRE(totals != std::string::npos);
  CHECK(html.find("<b>150</b>", totals) != std::string::npos);
  CHECK(html.find("<b>97.00%</b>", totals) != std::string::npos);
}

TEST_CASE("report: empty and damaged inputs still give a page", "[report]") {
  const std::string empty = render_report({});
  CHECK(count(empty, "<svg") == 4);  // no best individual, so no DNA drawing
  CHECK(empty.find("no individuals yet") != std::string::npos);
  CHECK(svg_of(empty, "fig-pareto").find("no individuals yet") != std::string::npos);

  // A DNA that cannot compile (far too many channels for a big input) is explained, not thrown.
  Synthetic run = synthetic_run(12, 12, "b");
  ReportOptions opts = options_with_dna();
  opts.channels = 1000;
  std::string html;
  REQUIRE_NOTHROW(html = render_report(run.records, opts));
  CHECK(count(html, "<svg") == 4);
  CHECK(html.find("does not compile") != std::string::npos);

  // NaN and infinite numbers do not reach the SVG.
  run.records[3].flops = NAN;
  run.records[4].fitness = NAN;
  run.records[5].birth_time = INFINITY;
  html = render_report(run.records, options_with_dna());
  CHECK(count(html, "nan") == 0);
  CHECK(count(html, "inf\"") == 0);

  // Birth times of +-1.7e308 (their span overflows a double) used to make the axis loop for
  // ever; the page comes back, with a bounded number of ticks.
  Synthetic extreme = synthetic_run(6, 12, "x");
  extreme.records[0].birth_time = -1.7e308;
  extreme.records[1].birth_time = 1.7e308;
  extreme.records[2].birth_time = 1e300;
  extreme.records[3].train_seconds = 1e308;
  REQUIRE_NOTHROW(html = render_report(extreme.records, options_with_dna()));
  CHECK(count(html, "<svg") >= 3);
  CHECK(html.size() < 2'000'000);
}

namespace {

// The Pareto front by brute force: every plottable, not failed individual that no other one
// dominates (params <= and fitness >=, one of them strictly). O(n^2), independent of the page's.
std::vector<std::size_t> brute_front(const std::vector<IndividualRecord>& rs) {
  const auto eligible = [&](std::size_t i) {
    return !rs[i].failed && rs[i].params > 0 && std::isfinite(rs[i].fitness);
  };
  std::vector<std::size_t> front;
  for (std::size_t i = 0; i < rs.size(); ++i) {
    if (!eligible(i)) continue;
    bool dominated = false;
    for (std::size_t j = 0; j < rs.size() && !dominated; ++j)
      dominated = j != i && eligible(j) && rs[j].params <= rs[i].params &&
                  rs[j].fitness >= rs[i].fitness &&
                  (rs[j].params < rs[i].params || rs[j].fitness > rs[i].fitness);
    if (!dominated) front.push_back(i);
  }
  std::sort(front.begin(), front.end(), [&](std::size_t a, std::size_t b) {
    return rs[a].params != rs[b].params ? rs[a].params < rs[b].params : a < b;
  });
  return front;
}

// The numbers after each command letter of an SVG path ("M1 2H3V4" -> M:{1,2}, H:{3}, V:{4}).
std::vector<std::pair<char, double>> path_numbers(const std::string& d) {
  std::vector<std::pair<char, double>> out;
  char cmd = 0;
  for (std::size_t i = 0; i < d.size();) {
    if (std::isalpha(static_cast<unsigned char>(d[i]))) {
      cmd = d[i++];
    } else if (d[i] == ' ') {
      ++i;
    } else {
      std::size_t used = 0;
      out.emplace_back(cmd, std::stod(d.substr(i), &used));
      i += used;
    }
  }
  return out;
}

std::string attr_of(const std::string& tag, const std::string& name) {
  const std::size_t a = tag.find(" " + name + "=\"");
  if (a == std::string::npos) return "";
  const std::size_t b = a + name.size() + 3;
  return tag.substr(b, tag.find('"', b) - b);
}

}  // namespace

// Sizes from a small pool and accuracies on a 5% grid, so that ties in either (and exact copies)
// occur; failed children with a high fitness, sizes of 0 and below, NaN and infinite accuracies,
// and a birth time of NaN mixed in.
TEST_CASE("report: accuracy against parameters, its Pareto front and the limit", "[report]") {
  std::vector<int64_t> sizes;
  for (int k = 0; k < 12; ++k) sizes.push_back(int64_t(std::pow(10.0, uniform(1, 6.5))));
  std::vector<IndividualRecord> rs;
  const int n = 40 + int(test::rng()() % 80);
  const std::string odd_id = "p<b>&\"'";
  for (int i = 0; i < n; ++i) {
    IndividualRecord r;
    r.id = i == 7 ? odd_id : "p-" + std::to_string(i);
    r.mutation = i % 3 ? "ALTER-STRIDE" : "<i>odd</i>";
    r.birth_time = i == 5 ? NAN : kT0 + 60 * i;
    r.death_time = test::rng()() % 3 ? r.birth_time + 30 : NAN;
    r.params = sizes[test::rng()() % sizes.size()];
    r.fitness = 0.05 * double(2 + test::rng()() % 18);
    const unsigned odd = unsigned(test::rng()() % 12);
    if (odd == 0) r.failed = true, r.failure = "loss <NaN>";  // fitness left high on purpose
    if (odd == 1) r.params = 0;
    if (odd == 2) r.params = -int64_t(1 + test::rng()() % 1000);
    if (odd == 3) r.fitness = NAN;
    if (odd == 4) r.fitness = INFINITY;
    rs.push_back(r);
  }
  // An exact copy (another id) of the smallest size's most accurate individual: both on the front.
  std::vector<std::size_t> expected = brute_front(rs);
  REQUIRE(!expected.empty());
  IndividualRecord copy = rs[expected.front()];
  copy.id = "copy";
  rs.push_back(copy);
  expected = brute_front(rs);
  CHECK(std::count(expected.begin(), expected.end(), rs.size() - 1) == 1);

  // The function against brute force: the same individuals, sorted by size (then index).
  const std::vector<std::size_t> front = pareto_front(rs);
  CHECK(front == expected);
  for (std::size_t k = 1; k < front.size(); ++k) {
    CHECK(rs[front[k]].params >= rs[front[k - 1]].params);
    CHECK(rs[front[k]].fitness >= rs[front[k - 1]].fitness);
  }

  std::size_t dots = 0, alive = 0;
  for (const IndividualRecord& r : rs)
    if (r.params > 0 && std::isfinite(r.fitness)) ++dots, alive += r.alive();
  INFO(rs.size() << " records, " << dots << " plotted, front of " << expected.size());

  for (const int64_t limit : {int64_t(0), int64_t(20000), int64_t(3'000'000'000)}) {
    INFO("max_params " << limit);
    ReportOptions opts = options_with_dna();
    opts.max_params = limit;
    std::string html;
    REQUIRE_NOTHROW(html = render_report(rs, opts));
    const std::string svg = svg_of(html, "fig-pareto");
    REQUIRE(!svg.empty());
    CHECK(count(html, "<svg") == 5);
    CHECK(count(svg, "nan") == 0);
    CHECK(count(svg, "inf") == 0);
    CHECK(html.find(odd_id) == std::string::npos);
    CHECK(html.find("<i>odd</i>") == std::string::npos);

    // One dot per plottable record, coloured by state; the failed ones as rings at 0.
    CHECK(count(svg, "<circle class=\"alive") + count(svg, "<circle class=\"dead") == dots);
    CHECK(count(svg, "<circle class=\"alive") == alive);
    CHECK(svg.find("alive (") != std::string::npos);

    // Its marks: exactly the brute-force front, each titled with the individual's id.
    std::vector<std::string> marked, wanted;
    for (std::size_t at = svg.find("<circle class=\"pareto-mark\""); at != std::string::npos;
         at = svg.find("<circle class=\"pareto-mark\"", at + 1)) {
      const std::size_t t = svg.find("<title>", at) + 7;
      marked.push_back(svg.substr(t, svg.find(": ", t) - t));
    }
    for (std::size_t i : expected) wanted.push_back(html_escaped(rs[i].id));
    CHECK(marked == wanted);

    // Its line: a staircase through the marks, rising (y down) at every step to the right.
    REQUIRE(count(svg, "class=\"pareto-line\"") == 1);
    const std::size_t line = svg.find("class=\"pareto-line\"");
    const std::vector<std::pair<char, double>> d =
        path_numbers(attr_of(svg.substr(line - 6, svg.find('>', line) - line + 6), "d"));
    std::size_t rises = 0;
    for (std::size_t k = 1; k < expected.size(); ++k)
      rises += rs[expected[k]].fitness > rs[expected[k - 1]].fitness;
    CHECK(std::size_t(std::count_if(d.begin(), d.end(), [](auto& c) { return c.first == 'V'; })) ==
          rises);
    double last_x = -1, last_y = 1e9;
    for (auto [c, v] : d) {
      if (c == 'H') {
        CHECK(v >= last_x);
        last_x = v;
      } else if (c == 'V') {
        CHECK(v < last_y);
        last_y = v;
      }
    }

    // The limit: a dashed line iff one is set, inside the plot, labelled with its value.
    CHECK(count(svg, "class=\"limit-line\"") == (limit > 0 ? 1u : 0u));
    CHECK((svg.find("max params " + std::to_string(limit) + "<") != std::string::npos) ==
          (limit > 0));
    if (limit > 0) {
      const std::size_t at = svg.find("<line class=\"limit-line\"");
      const double x = std::stod(attr_of(svg.substr(at, svg.find('>', at) - at), "x1"));
      CHECK(x > 66);
      CHECK(x < 1080 - 18);
      CHECK(html.find("--max-params " + std::to_string(limit)) != std::string::npos);
    }
  }

  // Nothing to place: no individual with a size, or none at all; the plot says so.
  std::vector<IndividualRecord> sizeless = rs;
  for (IndividualRecord& r : sizeless) r.params = 0;
  std::string html;
  REQUIRE_NOTHROW(html = render_report(sizeless, options_with_dna()));
  std::string svg = svg_of(html, "fig-pareto");
  CHECK(svg.find("no parameter counts recorded") != std::string::npos);
  CHECK(count(svg, "<circle class=\"alive") + count(svg, "<circle class=\"dead") == 0);
  CHECK(count(svg, "class=\"pareto-line\"") == 0);
  CHECK(pareto_front(sizeless).empty());
  ReportOptions limited;
  limited.max_params = 1000;
  REQUIRE_NOTHROW(html = render_report({}, limited));
  svg = svg_of(html, "fig-pareto");
  CHECK(svg.find("no individuals yet") != std::string::npos);
  CHECK(count(svg, "class=\"limit-line\"") == 1);
  CHECK(pareto_front({}).empty());

  // write_report takes the limits from run.json's settings, where evo search records them.
  TempDir tmp;
  const std::string dir = (tmp.path / "run").string();
  {
    PopulationOptions po;
    po.size = 4;
    po.durable = false;
    po.settings = {{"data", "fashion-mnist"}, {"max_params", 20000}, {"max_flops", 3.5e6}};
    Population pop(dir, po);
    for (int i = 0; i < 3; ++i) {
      Population::Staging child = pop.begin_child();
      REQUIRE(pop.take_free_slot(child) != FreeSlot::kNone);
      save_dna(load_dna(kSkipsDna), child.dna_path());
      std::ofstream(child.weights_path()) << "not real weights";
      IndividualRecord r;
      r.mutation = "initial";
      r.fitness = uniform(0.1, 0.9);
      r.birth_time = kT0 + i;
      r.params = int64_t(uniform(1e3, 1.5e4));
      pop.publish(std::move(child), r);
    }
  }
  const std::string out = (tmp.path / "report.html").string();
  write_report(dir, out);
  html = read_text(out);
  svg = svg_of(html, "fig-pareto");
  CHECK(count(svg, "class=\"limit-line\"") == 1);
  CHECK(svg.find("max params 20000<") != std::string::npos);
  CHECK(count(svg, "<circle class=\"alive\"") == 3);
  CHECK(html.find("max_flops <b>") != std::string::npos);  // the header shows it; no line
}

// A run made through the store, as the search makes one: initial individuals through free slots,
// then children that each kill the worse of two random living individuals.
TEST_CASE("report: write_report reads a run folder and writes the page atomically", "[report]") {
  TempDir tmp;
  const std::string dir = (tmp.path / "run").string();
  const Dna dna = load_dna(kSkipsDna);
  auto make_run = [&](const std::string& data) {
    PopulationOptions po;
    po.size = 8;
    po.durable = false;
    po.settings = {{"data", data}, {"steps", 100}};
    Population pop(dir, po);
    double t = kT0;
    std::string best;
    double best_fit = -1;
    for (int i = 0; i < 30; ++i) {
      Population::Staging child = pop.begin_child();
      if (pop.take_free_slot(child) == FreeSlot::kNone) {
        const std::vector<std::string> alive = pop.alive_ids();
        REQUIRE(alive.size() >= 2);
        const std::string a = alive[test::rng()() % alive.size()];
        const std::string b = alive[test::rng()() % alive.size()];
        const double fa = pop.read(a)->fitness, fb = pop.read(b)->fitness;
        REQUIRE(pop.kill(child, fa < fb ? a : b));
      }
      save_dna(dna, child.dna_path());
      std::ofstream(child.weights_path()) << "not real weights";
      IndividualRecord r;
      r.mutation = i < 8 ? "initial" : "IDENTITY";
      r.fitness = uniform(0.1, 0.9);
      r.failed = i == 20;
      if (r.failed) r.fitness = 0;
      t += uniform(60, 600);
      r.birth_time = t;
      r.flops = 1e12;
      const std::string id = child.id;
      pop.publish(std::move(child), r);
      if (!r.failed && r.fitness > best_fit) best_fit = r.fitness, best = id;
    }
    return best;
  };
  const std::string best = make_run("fashion-mnist");
  const Population pop(dir);
  const std::vector<IndividualRecord> all = pop.all_individuals();
  REQUIRE(all.size() == 30);

  const std::string out = default_report_path(dir);
  CHECK(out == dir + "/report.html");
  write_report(dir, out);
  const std::string html = read_text(out);
  for (const auto& e : fs::directory_iterator(dir))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  const std::string fig = svg_of(html, "fig-population");
  std::size_t alive = 0, dead = 0;
  for (const IndividualRecord& r : all) (r.alive() ? alive : dead)++;
  CHECK(count(fig, "<circle class=\"alive") == alive);
  CHECK(count(fig, "<circle class=\"dead") == dead);
  CHECK(alive == pop.alive_ids().size());
  // The best individual heads the table, and its DNA is drawn for run.json's data (28x28x1).
  const std::size_t first_row = html.find("<td>1</td>", html.find("<table id=\"top\""));
  REQUIRE(first_row != std::string::npos);
  CHECK(html.substr(first_row, 120).find(best) != std::string::npos);
  const std::string graph = svg_of(html, "fig-dna");
  CHECK(graph.find(">28x28x16<") != std::string::npos);
  CHECK(html.find("data <b>fashion-mnist</b>") != std::string::npos);
  CHECK(count(svg_of(html, "fig-pareto"), "class=\"limit-line\"") == 0);  // no limit in run.json
  // No final.json yet: both test cards say "not measured".
  CHECK(html.find("best's test acc</span><b>&mdash;</b>") != std::string::npos);

  // What a finished search leaves in final.json shows on the cards (the best's test accuracy
  // only when final.json names the best individual). Validation accuracies here are <= 90%, so
  // 97.13% and 98.21% can only come from final.json.
  save_final_results(dir, best, 0.97134, 0.98211, 5);
  write_report(dir, out);
  const std::string finished = read_text(out);
  CHECK(finished.find("best's test acc</span><b>97.13%</b>") != std::string::npos);
  CHECK(finished.find("ensemble test acc</span><b>98.21%</b>") != std::string::npos);
  CHECK(finished.find("averaged softmax of the top 5") != std::string::npos);
  CHECK(finished.find("answer's test acc") == std::string::npos);  // final.json names none
  // A run with a final phase records its answer: a card of its own.
  save_final_results(dir, best, 0.97134, 0.98211, 5,
                     {{"answer", "ensemble"}, {"answer_test_accuracy", 0.99017}});
  write_report(dir, out);
  CHECK(read_text(out).find("answer's test acc</span><b>99.02%</b>") != std::string::npos);
  CHECK(read_text(out).find("what evo export writes: the ensemble") != std::string::npos);
  save_final_results(dir, "someone-else", 0.97134, 0.98211, 5);
  write_report(dir, out);
  CHECK(read_text(out).find("97.13%") == std::string::npos);

  // Another data set in run.json: the DNA is compiled for its images (32x32x3: 16 x 3 = 48).
  fs::remove_all(dir);
  make_run("cifar10:/nowhere");
  write_report(dir, (tmp.path / "cifar.html").string());
  CHECK(svg_of(read_text(tmp.path / "cifar.html"), "fig-dna").find(">32x32x48<") !=
        std::string::npos);

  // Not a run: clear errors, and nothing written.
  const auto message_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const std::string missing = (tmp.path / "missing").string();
  CHECK_THAT(message_of([&] { write_report(missing, missing + ".html"); }),
             Catch::Contains("is not a folder"));
  fs::create_directories(tmp.path / "empty");
  CHECK_THAT(message_of([&] { write_report((tmp.path / "empty").string(), out); }),
             Catch::Contains("no run.json"));
  CHECK(!fs::exists(missing + ".html"));
  CHECK_THAT(message_of([&] { write_report(dir, (tmp.path / "no/such/folder.html").string()); }),
             Catch::Contains("cannot write"));
}

TEST_CASE("report: trials.csv has one row per individual, read back by Python's csv", "[report]") {
  TempDir tmp;
  const std::string dir = (tmp.path / "run").string();
  const Dna dna = load_dna(kSkipsDna);
  PopulationOptions po;
  po.size = 5;
  po.durable = false;
  po.settings = {{"data", "fashion-mnist"}, {"steps", 100}};
  Population pop(dir, po);
  double t = kT0;
  for (int i = 0; i < 12; ++i) {
    Population::Staging child = pop.begin_child();
    std::string parent;
    if (pop.take_free_slot(child) == FreeSlot::kNone) {
      const std::vector<std::string> alive = pop.alive_ids();
      parent = alive[test::rng()() % alive.size()];
      const std::string victim = alive[test::rng()() % alive.size()];
      REQUIRE(pop.kill(child, victim));
    }
    save_dna(dna, child.dna_path());
    std::ofstream(child.weights_path()) << "not real weights";
    IndividualRecord r;
    r.parent = parent;
    r.mutation = i < 5 ? "initial" : "ALTER-LEARNING-RATE";
    // Text that CSV must quote: commas, quotes, a line break.
    r.detail = "rate 0.1 -> 0.05, \"halved\"\nsecond line";
    r.fitness = uniform(0.1, 0.9);
    r.failed = i == 7;
    if (r.failed) {
      r.fitness = 0;
      r.failure = "training loss is NaN at step 11, at rate 0.5";
    }
    t += uniform(1, 100);
    r.birth_time = t;
    r.params = 1000 + i;
    r.steps = 100;
    r.flops = 1.5e9 * (i + 1);
    r.train_seconds = uniform(1, 5);
    r.learning_rate = uniform(0.01, 0.1);
    r.worker = "cpu/" + std::to_string(i % 2);
    pop.publish(std::move(child), r);
  }
  const std::vector<IndividualRecord> all = pop.all_individuals();
  REQUIRE(all.size() == 12);
  const ReportWritten w = write_report(dir);
  CHECK(w.trials_path == dir + "/trials.csv");
  CHECK(w.damaged.empty());

  // Python's csv module, an independent reader, turns the file into JSON.
  const std::string json_path = (tmp.path / "rows.json").string();
  REQUIRE(test::shell("/usr/bin/python3 -c 'import csv, json, sys; "
                      "print(json.dumps(list(csv.DictReader(open(sys.argv[1], newline=\"\")))))' '" +
                      w.trials_path + "' > '" + json_path + "'") == 0);
  const nlohmann::json rows = nlohmann::json::parse(read_text(json_path));
  REQUIRE(rows.size() == all.size());
  double last_birth = -1, first_birth = INFINITY;
  for (const IndividualRecord& r : all) first_birth = std::min(first_birth, r.birth_time);
  std::set<std::string> seen;
  for (const nlohmann::json& row : rows) {
    const std::string id = row.at("id");
    INFO("row " << row.dump());
    const auto it = std::find_if(all.begin(), all.end(),
                                 [&](const IndividualRecord& r) { return r.id == id; });
    REQUIRE(it != all.end());
    CHECK(seen.insert(id).second);
    const IndividualRecord& r = *it;
    CHECK(row.at("parent") == r.parent);
    CHECK(row.at("mutation") == r.mutation);
    CHECK(row.at("detail") == r.detail);
    CHECK(row.at("failure") == r.failure);
    CHECK(row.at("worker") == r.worker);
    CHECK(row.at("killed_by") == r.killed_by);
    CHECK(row.at("failed") == (r.failed ? "1" : "0"));
    CHECK(row.at("alive") == (r.alive() ? "1" : "0"));
    if (r.failed)
      CHECK(row.at("val_accuracy") == "");  // a failed child has no accuracy, not 0
    else
      CHECK(std::stod(row.at("val_accuracy").get<std::string>()) == r.fitness);
    CHECK(row.at("test_accuracy") == "");  // not measured
    CHECK(std::stoll(row.at("params").get<std::string>()) == r.params);
    CHECK(std::stod(row.at("flops").get<std::string>()) == r.flops);
    CHECK(std::stod(row.at("learning_rate").get<std::string>()) == r.learning_rate);
    const double birth = std::stod(row.at("birth_time").get<std::string>());
    CHECK(birth == r.birth_time);
    CHECK(std::stod(row.at("born_s").get<std::string>()) == birth - first_birth);
    CHECK(birth > last_birth);  // by birth
    last_birth = birth;
    CHECK((row.at("death_time") == "") == r.alive());
  }
  CHECK(rows[0].at("born_s") == "0");
}

// The page as a browser draws it: each plot's marks must appear in the screenshot, in their own
// colours and places, and the browser's DOM must hold the same elements as the file.
TEST_CASE("report: headless Chromium renders the plots", "[report][chromium]") {
  const std::string chromium = find_chromium();
  if (chromium.empty()) {
    WARN("chromium is not installed (apt-get install chromium): rendering check skipped");
    return;
  }
  TempDir tmp;
  Synthetic run = synthetic_run(160, 40, "the-best");
  // The most accurate also the largest: the front then spans the plot, from the smallest
  // individual to this one, whatever the random sizes.
  run.records[run.records.size() / 2].params = 999'999;
  const fs::path page = tmp.path / "report.html";
  ReportOptions opts = options_with_dna();
  opts.max_params = 300000;  // among the sizes (1e3..1e6): the limit line is drawn too
  const std::string html = render_report(run.records, opts);
  std::ofstream(page) << html;

  const fs::path shot = tmp.path / "shot.png", log = tmp.path / "chromium.log";
  const int rc =
      run_chromium(chromium, "--screenshot=" + shot.string() + " --window-size=1200,2800", page,
                   tmp.path / "profile", log);
  INFO("chromium said:\n" << read_text(log));
  REQUIRE(rc == 0);
  const Image im = load_png(shot);
  REQUIRE(im.w == 1200);
  REQUIRE(im.h == 2800);

  // The page's bands, top to bottom: Figure 1 down to the first green (the best-so-far row), that
  // row down to the next blue (the accuracy-against-parameters plot's legend), then that plot
  // and the rest (whose colours are none of these).
  const Rgb alive_c = parse_colour(kAliveColour), dead_c = parse_colour(kDeadColour),
            failed_c = parse_colour(kFailedColour), best_c = parse_colour(kBestColour);
  const int best_top = first_row(im, best_c, first_row(im, alive_c, 0));
  const int pareto_top = first_row(im, alive_c, best_top);
  INFO("bands: Figure 1 above row " << best_top << ", best so far above " << pareto_top);
  REQUIRE(best_top < pareto_top);
  REQUIRE(pareto_top < im.h);

  const Found alive = find_colour(im, alive_c, 0, best_top);
  const Found dead = find_colour(im, dead_c, 0, best_top);
  const Found failed = find_colour(im, failed_c, 0, best_top);
  const Found best = find_colour(im, best_c, best_top, pareto_top);
  INFO("Figure 1 pixels: alive " << alive.pixels << ", dead " << dead.pixels << ", failed "
                                 << failed.pixels << "; best so far " << best.pixels);
  // A dot of radius 3 has ~28 pixels of its own colour; overlaps and edges take some.
  CHECK(alive.pixels >= std::size_t(8 * run.alive));
  CHECK(dead.pixels >= std::size_t(6 * run.dead));
  CHECK(failed.pixels >= std::size_t(4 * (run.failed_alive + run.failed_dead)));
  CHECK(best.pixels >= 400);  // two staircases, ~450 px wide each
  // Where they are: the living are the latest born (further right than the dead); failed rings
  // sit at fitness 0 (lower than any dot).
  CHECK(alive.mean_x > dead.mean_x + 100);
  CHECK(failed.mean_y > dead.mean_y + 20);

  // Accuracy against parameters: the same individuals again (the front's marks cover a few), the
  // failed at 0, and the front along the top of the cloud, from the smallest to the largest.
  const Found p_alive = find_colour(im, alive_c, pareto_top, im.h);
  const Found p_dead = find_colour(im, dead_c, pareto_top, im.h);
  const Found p_failed = find_colour(im, failed_c, pareto_top, im.h);
  const Found p_best = find_colour(im, best_c, pareto_top, im.h);
  INFO("vs parameters pixels: alive " << p_alive.pixels << ", dead " << p_dead.pixels << ", failed "
                                      << p_failed.pixels << ", front " << p_best.pixels);
  CHECK(p_alive.pixels >= std::size_t(6 * run.alive));
  CHECK(p_dead.pixels >= std::size_t(4 * run.dead));
  CHECK(p_failed.pixels >= std::size_t(4 * (run.failed_alive + run.failed_dead)));
  CHECK(p_best.pixels >= 300);
  CHECK(p_failed.mean_y > p_dead.mean_y + 20);
  CHECK(p_best.mean_y < p_dead.mean_y - 20);
  // The DNA graph: one box per vertex, in the colour of its activation.
  CHECK(count_blobs(im, parse_colour(kBnReluColour), 1000) == kSkipsBnRelu);
  CHECK(count_blobs(im, parse_colour(kLinearColour), 1000) == kSkipsLinear);

  // The DOM after parsing: the same elements as the file (a markup error would lose or nest
  // some), and the odd text stays text.
  const fs::path dom = tmp.path / "dom.html";
  REQUIRE(run_chromium(chromium, "--dump-dom", page, tmp.path / "profile", log, dom) == 0);
  const std::string parsed = read_text(dom);
  CHECK(count(parsed, "<svg") == 5);
  for (const char* id : {"fig-population", "fig-pareto"}) {
    INFO(id);  // every synthetic individual has a size, so both plots show all of them
    CHECK(count(svg_of(parsed, id), "<circle class=\"alive\"") == std::size_t(run.alive));
    CHECK(count(svg_of(parsed, id), "<circle class=\"dead\"") == std::size_t(run.dead));
  }
  CHECK(count(svg_of(parsed, "fig-pareto"), "<circle class=\"pareto-mark\"") ==
        pareto_front(run.records).size());
  CHECK(count(svg_of(parsed, "fig-pareto"), "<line class=\"limit-line\"") == 1);
  CHECK(count(parsed, "<tr") == count(html, "<tr"));
  CHECK(count(parsed, "<g class=\"vertex ") == std::size_t(kSkipsBnRelu + kSkipsLinear));
}

// ---- the comparison page of several runs -------------------------------------------------------

namespace {

// One synthetic run folder of a study, made through the store as the search makes one: initial
// individuals through free slots, then children that each kill the worse of two living ones.
// Returns the records it published (what the page must summarise).
std::vector<IndividualRecord> make_study_run(const std::string& dir, const nlohmann::json& settings,
                                             int population, int children) {
  PopulationOptions po;
  po.size = population;
  po.durable = false;
  po.settings = settings;
  Population pop(dir, po);
  const Dna dna = load_dna(kSkipsDna);
  std::vector<IndividualRecord> published;
  double t = kT0 + uniform(0, 1000);
  for (int i = 0; i < children; ++i) {
    Population::Staging child = pop.begin_child();
    if (pop.take_free_slot(child) == FreeSlot::kNone) {
      const std::vector<std::string> alive = pop.alive_ids();
      REQUIRE(alive.size() >= 2);
      const std::string a = alive[test::rng()() % alive.size()];
      const std::string b = alive[test::rng()() % alive.size()];
      REQUIRE(pop.kill(child, pop.read(a)->fitness < pop.read(b)->fitness ? a : b));
    }
    save_dna(dna, child.dna_path());
    std::ofstream(child.weights_path()) << "not real weights";
    IndividualRecord r;
    r.mutation = i < population ? "initial" : "IDENTITY";
    r.fitness = uniform(0.1, 0.9);
    r.failed = i == children / 2;
    if (r.failed) r.fitness = 0;
    r.train_seconds = uniform(5, 50);
    t += uniform(10, 100);
    r.birth_time = t;
    r.flops = uniform(1e11, 1e12);
    r.id = child.id;
    pop.publish(std::move(child), r);
    published.push_back(r);
  }
  return published;
}

// The <tr ...> ... </tr> rows of one class in the page's comparison table, in order.
std::vector<std::string> rows_of(const std::string& html, const std::string& cls) {
  std::vector<std::string> rows;
  const std::size_t table = html.find("<table id=\"compare\"");
  if (table == std::string::npos) return rows;
  const std::string open = "<tr class=\"" + cls + "\"";
  for (std::size_t at = html.find(open, table); at != std::string::npos;
       at = html.find(open, at + 1))
    rows.push_back(html.substr(at, html.find("</tr>", at) - at));
  return rows;
}

// The value of attribute `name` in the k-th <td> of a row (k = 0 is the setting / run name).
double cell_attr(const std::string& row, int k, const std::string& name) {
  std::size_t at = 0;
  for (int i = 0; i <= k; ++i) at = row.find("<td", at + 1);
  if (at == std::string::npos) return NAN;
  const std::size_t end = row.find('>', at);
  const std::size_t a = row.find(name + "=\"", at);
  if (a == std::string::npos || a > end) return NAN;
  return std::stod(row.substr(a + name.size() + 2));
}

}  // namespace

TEST_CASE("report: the comparison page groups runs by setting, with their statistics",
          "[report][compare]") {
  TempDir tmp;
  // Two settings that differ in steps and in a data string that is hostile HTML; the seed differs
  // between every run and must not split a setting. Setting A has 3 runs, B has 2; A's third run
  // and B's first have no final.json.
  const std::string hostile = "x<script>&\"'y";
  const std::string hostile_escaped = "x&lt;script&gt;&amp;&quot;&#39;y";
  struct Planned {
    int setting;
    std::string dir;
    nlohmann::json settings;
    bool final;
  };
  const auto a = [](int seed) {
    return nlohmann::json{{"data", "fashion-mnist"}, {"steps", 100}, {"seed", seed}};
  };
  const auto b = [&](int seed) {
    return nlohmann::json{{"data", hostile}, {"steps", 200}, {"seed", seed}};
  };
  const auto dir = [&](const char* name) { return (tmp.path / name).string(); };
  const std::vector<Planned> plan = {{0, dir("A-s1"), a(1), true},
                                     {0, dir("A-s2"), a(2), true},
                                     {0, dir("A-s3"), a(3), false},
                                     {1, dir("B-s1 <&>"), b(1), false},
                                     {1, dir("B-s2"), b(2), true}};
  // What each run should show, computed here from what was published, independently of the page.
  struct Expected {
    double best_val = -1, best_test = NAN, ensemble_test = NAN, children = 0, flops = 0;
  };
  std::vector<Expected> expected;
  std::vector<std::string> dirs;
  for (const Planned& p : plan) {
    const std::vector<IndividualRecord> recs =
        make_study_run(p.dir, p.settings, 4, 10 + int(test::rng()() % 8));
    Expected e;
    for (const IndividualRecord& r : recs) {
      if (!r.failed) e.best_val = std::max(e.best_val, r.fitness);
      e.flops += r.flops;
      e.children += 1;
    }
    if (p.final) {
      e.best_test = uniform(0.5, 0.9), e.ensemble_test = uniform(0.5, 0.9);
      save_final_results(p.dir, "whoever", e.best_test, e.ensemble_test, 3);
    }
    expected.push_back(e);
    dirs.push_back(p.dir);
  }

  const std::string out = (tmp.path / "compare.html").string();
  write_compare_report(dirs, out);
  for (const auto& e : fs::directory_iterator(tmp.path))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  const std::string html = read_text(out);
  INFO("page: " << out);

  // Self-contained, two plots, the hostile setting and run folder only ever escaped.
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(count(html, "<script") == 0);
  CHECK(count(html, "src=") == 0);
  CHECK(count(html, "https:") == 0);
  CHECK(count(html, "<svg") == 2);
  CHECK(html.find(hostile) == std::string::npos);
  CHECK(html.find("B-s1 <&>") == std::string::npos);

  // One group row per setting, each once, with its n; the seed and the shared data set aside.
  const std::vector<std::string> settings = rows_of(html, "setting");
  REQUIRE(settings.size() == 2);
  CHECK(settings[0].find(">data=fashion-mnist, steps=100<") != std::string::npos);
  CHECK(settings[1].find(">data=" + hostile_escaped + ", steps=200<") != std::string::npos);
  const std::string table = html.substr(html.find("<table id=\"compare\""));
  CHECK(count(table, "data=fashion-mnist, steps=100") == 1);
  CHECK(count(table, "data=" + hostile_escaped + ", steps=200") == 1);
  CHECK(settings[0].find("<td class=\"n\">3</td>") != std::string::npos);
  CHECK(settings[1].find("<td class=\"n\">2</td>") != std::string::npos);
  CHECK(table.find("seed=") == std::string::npos);
  CHECK(html.find("shared by every run: population <b>4</b>") != std::string::npos);

  // Every run has its row, under its setting, named by its folder.
  const std::vector<std::string> runs = rows_of(html, "run");
  REQUIRE(runs.size() == plan.size());
  for (std::size_t i = 0; i < plan.size(); ++i) {
    CHECK(runs[i].find(">" + html_escaped(plan[i].dir) + "<") != std::string::npos);
    CHECK(runs[i].find("seed " + std::to_string(plan[i].settings["seed"].get<int>())) !=
          std::string::npos);
    CHECK(cell_attr(runs[i], 2, "data-value") == Approx(expected[i].best_val).epsilon(1e-8));
    CHECK(cell_attr(runs[i], 5, "data-value") == expected[i].children);
  }

  // The statistics of each setting: mean and sample sd, by a double loop over runs here.
  const auto field = [](const Expected& e, int column) {
    switch (column) {
      case 2:
        return e.best_val;
      case 3:
        return e.best_test;
      case 4:
        return e.ensemble_test;
      case 5:
        return e.children;
      default:
        return e.flops;
    }
  };
  for (int s = 0; s < 2; ++s) {
    for (int column : {2, 3, 4, 5, 7}) {
      double sum = 0;
      int n = 0;
      for (std::size_t i = 0; i < plan.size(); ++i)
        if (plan[i].setting == s && std::isfinite(field(expected[i], column)))
          sum += field(expected[i], column), ++n;
      const double mean = sum / n;
      double ss = 0;
      for (std::size_t i = 0; i < plan.size(); ++i)
        if (plan[i].setting == s && std::isfinite(field(expected[i], column)))
          ss += (field(expected[i], column) - mean) * (field(expected[i], column) - mean);
      INFO("setting " << s << ", column " << column << ", n " << n);
      CHECK(cell_attr(settings[s], column, "data-n") == n);
      CHECK(cell_attr(settings[s], column, "data-mean") == Approx(mean).epsilon(1e-8));
      if (n >= 2) {
        CHECK(cell_attr(settings[s], column, "data-sd") ==
              Approx(std::sqrt(ss / (n - 1))).epsilon(1e-8));
      } else {
        CHECK(std::isnan(cell_attr(settings[s], column, "data-sd")));
      }
      if (column == 2 && n >= 2) {
        char text[64];
        std::snprintf(text, sizeof text, "%.2f%% &plusmn; %.2f<", 100 * mean,
                      100 * std::sqrt(ss / (n - 1)));
        CHECK(settings[s].find(text) != std::string::npos);
      }
    }
  }
  // Setting A's best test accuracy comes from 2 of its 3 runs, B's from 1 of 2: the page says so.
  CHECK(settings[0].find("(2 of 3)") != std::string::npos);
  CHECK(settings[1].find("(1 of 2)") != std::string::npos);

  // The plots: a thin line per run, a thick mean per setting, a band per setting of 2+ runs.
  for (const char* id : {"fig-compare-time", "fig-compare-flops"}) {
    const std::string svg = svg_of(html, id);
    INFO(id);
    CHECK(count(svg, "class=\"run-line\"") == plan.size());
    CHECK(count(svg, "class=\"mean-line\"") == 2);
    CHECK(count(svg, "class=\"band\"") == 2);
    CHECK(count(svg, "nan") == 0);
  }
  CHECK(count(svg_of(html, "fig-compare-flops"), "10<tspan") >= 2);

  // `evo report` with one folder is still the single-run page; with a folder that is not there,
  // an error that names it, and no page.
  const std::string missing = (tmp.path / "no-such-run").string();
  const fs::path out2 = tmp.path / "compare2.html";
  try {
    write_compare_report({dirs[0], missing}, out2.string());
    FAIL("no error for a missing run folder");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(missing) && Catch::Contains("is not a folder"));
  }
  CHECK(!fs::exists(out2));
  CHECK_THROWS_AS(write_compare_report({}, out2.string()), Error);
}

TEST_CASE("report: the comparison page survives odd data", "[report][compare]") {
  std::string html;
  REQUIRE_NOTHROW(html = render_compare_report({}));
  CHECK(count(html, "<svg") == 2);
  CHECK(html.find("no runs") != std::string::npos);

  // A run with no individuals, one whose settings are not an object, NaNs and infinities.
  std::vector<CompareRun> runs(3);
  runs[0].name = "empty";
  runs[1].name = "odd";
  runs[1].settings = nlohmann::json::array({1, 2});
  runs[2].name = "odd-numbers";
  runs[2].settings = {{"steps", 5}};
  runs[2].individuals = synthetic_run(30, 10, "b").records;
  runs[2].individuals[3].flops = NAN;
  runs[2].individuals[4].fitness = NAN;
  runs[2].individuals[5].birth_time = INFINITY;
  runs[2].individuals[6].train_seconds = NAN;
  runs[2].final_ensemble_test = INFINITY;
  REQUIRE_NOTHROW(html = render_compare_report(runs));
  CHECK(count(html, "nan") == 0);
  CHECK(count(html, "inf\"") == 0);
  CHECK(count(html, ">inf") == 0);
  CHECK(rows_of(html, "setting").size() == 2);  // steps=(unset) twice, steps=5
  CHECK(html.find("steps=(unset)") != std::string::npos);
  CHECK(count(svg_of(html, "fig-compare-time"), "class=\"run-line\"") == 1);
}
