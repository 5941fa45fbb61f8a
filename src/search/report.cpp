// The HTML report of a run: a small SVG plotting kit (scales, 1-2-5 ticks, axes), the paper's
// Figure 1, best-so-far curves, accuracy against parameters with its Pareto front (and the run's
// --max-params limit), a drawing of a compiled DNA and the table; and the comparison page of
// several runs, drawn with the same kit. Not a general plotting library: only what these
// figures need, and no script or network in the pages it writes.
#include "evo/report.h"
#include "evo/io.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

namespace evo {

namespace {

namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Beyond this many individuals Figure 1's dots carry no hover titles: they would be most of a
// page that must stay quick to open (a title is ~60 bytes, a bare dot ~50).
constexpr std::size_t kMaxTitledDots = 20000;

// ---- text --------------------------------------------------------------------------------------

// Escapes for HTML text and attribute values alike (ids and mutation details come from files that
// anyone may have written).
std::string esc(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        // Control characters are not allowed in HTML text; show them as a replacement mark.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t')
          o += "\xEF\xBF\xBD";
        else
          o += c;
    }
  }
  return o;
}

std::string strf(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// An SVG coordinate: one decimal is a tenth of a pixel, and keeps big plots small.
std::string px(double v) {
  return strf("%.1f", v);
}

// 9.1e19: the paper's way of writing FLOP counts.
std::string sci(double v) {
  if (!std::isfinite(v)) return "&mdash;";
  if (v == 0) return "0";
  const int e = int(std::floor(std::log10(std::fabs(v))));
  double m = v / std::pow(10.0, e);
  if (std::fabs(m) >= 9.95) return sci(std::copysign(std::pow(10.0, e + 1), v));
  if (e >= -2 && e <= 3) return strf("%.3g", v);
  return strf("%.1fe%d", m, e);
}

// 1.23M: parameter counts.
std::string si(double v) {
  if (!std::isfinite(v)) return "&mdash;";
  static const char* kPrefix[] = {"", "k", "M", "G", "T", "P", "E"};
  int k = 0;
  while (std::fabs(v) >= 999.5 && k < 6) v /= 1000, ++k;
  return k == 0 ? strf("%.0f", v) : strf("%.3g%s", v, kPrefix[k]);
}

std::string percent(double acc, int decimals = 2) {
  if (!std::isfinite(acc) || acc < 0) return "&mdash;";
  return strf("%.*f%%", decimals, 100 * acc);
}

std::string utc_text(double unix_seconds) {
  if (!std::isfinite(unix_seconds)) return "?";
  const std::time_t t = std::time_t(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// A depth factor as the edge label shows it: "x2.0", "x0.25", "x1.33".
std::string factor_text(double f) {
  if (f == std::round(f)) return strf("x%.1f", f);
  return strf("x%.3g", f);
}

// ---- scales and ticks --------------------------------------------------------------------------

// Maps data values to pixels, linearly or in log10.
struct Scale {
  double lo = 0, hi = 1;
  bool log = false;
  double p0 = 0, p1 = 1;  // pixels of lo and hi (p1 < p0 for a y axis)
  double operator()(double v) const {
    const double a = log ? std::log10(lo) : lo, b = log ? std::log10(hi) : hi;
    const double t = ((log ? std::log10(v) : v) - a) / (b - a);
    return p0 + t * (p1 - p0);
  }
};

struct Tick {
  double value;
  std::string label;  // empty: a minor tick
};

// The 1-2-5 step that gives about `target` intervals over `span`.
double nice_step(double span, int target) {
  const double raw = span / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw * 0.999) return m * mag;
  return 10 * mag;
}

// Widens [lo, hi] to whole steps and returns the ticks; labels are value * `mult` with as many
// decimals as the step needs, then `suffix` (percentages: mult 100, suffix "%").
std::vector<Tick> linear_ticks(double& lo, double& hi, int target, double mult = 1,
                               const std::string& suffix = "") {
  if (!(hi > lo)) {  // one value (or none): show a unit-wide window around it
    const double c = std::isfinite(lo) ? lo : 0;
    const double w = c == 0 ? 1 : std::fabs(c) * 0.1;
    lo = c - w / 2, hi = c + w / 2;
    if (c >= 0 && lo < 0) lo = 0, hi = w;
  }
  // A span no double can hold (records with birth times of +-1e308: damage, or a hostile file)
  // would make the step infinite and the tick loop below endless: show 0..1 instead, the points
  // off it are clipped.
  if (!std::isfinite(lo) || !std::isfinite(hi) || !std::isfinite(hi - lo)) lo = 0, hi = 1;
  const double step = nice_step(hi - lo, target);
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
  int decimals = std::max(0, -int(std::floor(std::log10(step * mult) + 1e-9)));
  // A step of 2.5 (or 0.25) needs one decimal more than its magnitude: 7.5, not 8.
  while (decimals < 9) {
    const double scaled = step * mult * std::pow(10.0, decimals);
    if (std::fabs(scaled - std::round(scaled)) < 1e-6 * scaled) break;
    ++decimals;
  }
  std::vector<Tick> ticks;
  // nice_step gives about `target` ticks; the bound only matters when lo is so large that adding
  // a step rounds away (1e300 + 1), where the loop would not advance.
  for (int i = 0; i < 10 * target + 10; ++i) {
    const double v = lo + i * step;
    if (v > hi + step * 1e-6) break;
    const double shown = std::fabs(v) < step * 1e-9 ? 0.0 : v * mult;
    ticks.push_back({v, strf("%.*f", decimals, shown) + suffix});
  }
  return ticks;
}

// A tick at every decade, labelled with its exponent (the axis draws 10 and a superscript), and
// unlabelled ones at 2..9 x 10^k while there is room. Widens [lo, hi] to whole decades.
std::vector<Tick> log_ticks(double& lo, double& hi) {
  if (!(lo > 0)) lo = 1;
  if (!(hi > lo)) hi = lo * 10;
  const int a = int(std::floor(std::log10(lo) + 1e-9)), b = int(std::ceil(std::log10(hi) - 1e-9));
  lo = std::pow(10.0, a), hi = std::pow(10.0, std::max(b, a + 1));
  std::vector<Tick> ticks;
  // Many decades: label every second or third so the labels do not collide.
  const int every = (b - a) > 12 ? 3 : (b - a) > 7 ? 2 : 1;
  for (int k = a; k <= std::max(b, a + 1); ++k) {
    ticks.push_back({std::pow(10.0, k), (k - a) % every == 0 ? std::to_string(k) : " "});
    if (k < std::max(b, a + 1) && b - a <= 7)
      for (int m = 2; m <= 9; ++m) ticks.push_back({m * std::pow(10.0, k), ""});
  }
  return ticks;
}

// ---- a plot frame ------------------------------------------------------------------------------

// The frame of one plot: an <svg> with grid, left and bottom spines, ticks, tick labels, axis
// labels and a title. The caller writes open(), then its marks, then "</svg>".
struct Plot {
  std::string id;
  double w = 540, h = 340;
  double left = 66, right = 18, top = 36, bottom = 50;
  // Pixels between the axes and the domain's ends, so marks at the ends stay clear of the axes
  // (matplotlib's margins).
  double pad = 8;
  Scale x, y;
  std::vector<Tick> xt, yt;
  std::string title, xlabel, ylabel;

  void layout() {
    x.p0 = left + pad, x.p1 = w - right - pad;
    y.p0 = h - bottom - pad, y.p1 = top + pad;
  }

  std::string tick_label(const Tick& t, bool log_axis) const {
    if (t.label.empty() || t.label == " ") return "";
    if (!log_axis) return esc(t.label);
    return "10<tspan dy=\"-6\" font-size=\"9\">" + esc(t.label) + "</tspan>";
  }

  std::string open() const {
    std::ostringstream o;
    o << "<svg class=\"plot\" id=\"" << id << "\" xmlns=\"http://www.w3.org/2000/svg\" width=\""
      << px(w) << "\" height=\"" << px(h) << "\" viewBox=\"0 0 " << px(w) << ' ' << px(h)
      << "\" role=\"img\" aria-label=\"" << esc(title) << "\">\n";
    o << "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
    const double x0 = left, x1 = w - right, y0 = h - bottom, y1 = top;
    o << "<text class=\"title\" x=\"" << px(left) << "\" y=\"" << px(top - 14)
      << "\" font-size=\"14\" font-weight=\"600\" fill=\"#222\">" << esc(title) << "</text>\n";
    // Grid first, so every mark lies above it.
    o << "<g stroke=\"#ececec\" stroke-width=\"1\">\n";
    for (const Tick& t : xt)
      if (!t.label.empty() && x(t.value) >= x0 - 0.5 && x(t.value) <= x1 + 0.5)
        o << "<line x1=\"" << px(x(t.value)) << "\" y1=\"" << px(y1) << "\" x2=\"" << px(x(t.value))
          << "\" y2=\"" << px(y0) << "\"/>\n";
    for (const Tick& t : yt)
      if (!t.label.empty())
        o << "<line x1=\"" << px(x0) << "\" y1=\"" << px(y(t.value)) << "\" x2=\"" << px(x1)
          << "\" y2=\"" << px(y(t.value)) << "\"/>\n";
    o << "</g>\n";
    // Spines and ticks.
    o << "<g stroke=\"#333\" stroke-width=\"1\" fill=\"none\">\n";
    o << "<path d=\"M" << px(x0) << ' ' << px(y1) << "V" << px(y0) << "H" << px(x1) << "\"/>\n";
    for (const Tick& t : xt) {
      const double len = t.label.empty() ? 3 : 5;
      o << "<line x1=\"" << px(x(t.value)) << "\" y1=\"" << px(y0) << "\" x2=\"" << px(x(t.value))
        << "\" y2=\"" << px(y0 + len) << "\"/>\n";
    }
    for (const Tick& t : yt) {
      const double len = t.label.empty() ? 3 : 5;
      o << "<line x1=\"" << px(x0 - len) << "\" y1=\"" << px(y(t.value)) << "\" x2=\"" << px(x0)
        << "\" y2=\"" << px(y(t.value)) << "\"/>\n";
    }
    o << "</g>\n";
    o << "<g font-size=\"11\" fill=\"#333\">\n";
    for (const Tick& t : xt)
      if (const std::string s = tick_label(t, x.log); !s.empty())
        o << "<text x=\"" << px(x(t.value)) << "\" y=\"" << px(y0 + 18)
          << "\" text-anchor=\"middle\">" << s << "</text>\n";
    for (const Tick& t : yt)
      if (const std::string s = tick_label(t, y.log); !s.empty())
        o << "<text x=\"" << px(x0 - 8) << "\" y=\"" << px(y(t.value) + 4)
          << "\" text-anchor=\"end\">" << s << "</text>\n";
    o << "</g>\n";
    o << "<text x=\"" << px((x0 + x1) / 2) << "\" y=\"" << px(h - 10)
      << "\" text-anchor=\"middle\" font-size=\"12\" fill=\"#222\">" << esc(xlabel) << "</text>\n";
    o << "<text transform=\"translate(15 " << px((y0 + y1) / 2)
      << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\" fill=\"#222\">" << esc(ylabel)
      << "</text>\n";
    return o.str();
  }

  std::string empty_note(const std::string& note) const {
    return "<text x=\"" + px((left + w - right) / 2) + "\" y=\"" + px((top + h - bottom) / 2) +
           "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#888\">" + esc(note) + "</text>\n";
  }
};

// ---- the run's numbers -------------------------------------------------------------------------

struct TimeUnit {
  double seconds;
  const char* name;
};

// Hours as in the paper, but a short run reads better in minutes or seconds.
TimeUnit pick_unit(double span_seconds) {
  if (span_seconds >= 2 * 3600) return {3600, "hours"};
  if (span_seconds >= 120) return {60, "minutes"};
  return {1, "seconds"};
}

struct Run {
  std::vector<const IndividualRecord*> all;  // birth order
  double t0 = kNaN, t_end = kNaN;            // first birth, last birth
  double total_flops = 0;
  std::size_t failed = 0;
  const IndividualRecord* best = nullptr;  // highest validation accuracy, failed ones excluded
  TimeUnit unit{3600, "hours"};
  double children_per_hour = 0;
  static bool is_alive(const IndividualRecord& r) { return r.alive(); }
  double since_t0(const IndividualRecord& r) const { return (r.birth_time - t0) / unit.seconds; }
};

// The ranking of the table and of "best": fitness, failed children (and unreadable fitness) last,
// the first born on a tie. A strict weak order even with NaNs, as std::sort needs.
double rank_key(const IndividualRecord* r) {
  return r->failed || !std::isfinite(r->fitness) ? -1.0 : r->fitness;
}

bool better(const IndividualRecord* a, const IndividualRecord* b) {
  if (rank_key(a) != rank_key(b)) return rank_key(a) > rank_key(b);
  return a->birth_time < b->birth_time;
}

Run summarise(const std::vector<IndividualRecord>& individuals) {
  Run run;
  for (const IndividualRecord& r : individuals)
    if (std::isfinite(r.birth_time)) run.all.push_back(&r);
  std::stable_sort(run.all.begin(), run.all.end(),
                   [](auto* a, auto* b) { return a->birth_time < b->birth_time; });
  for (const IndividualRecord* r : run.all) {
    if (std::isfinite(r->flops)) run.total_flops += r->flops;
    run.failed += r->failed;
    if (!r->failed && std::isfinite(r->fitness) && (!run.best || better(r, run.best))) run.best = r;
  }
  if (!run.all.empty()) {
    run.t0 = run.all.front()->birth_time;
    run.t_end = run.all.back()->birth_time;
    const double span = run.t_end - run.t0;
    run.unit = pick_unit(span);
    // Children per hour over the span of births: the search's throughput, as the paper counts it.
    if (span > 0) run.children_per_hour = double(run.all.size() - 1) / (span / 3600);
  }
  return run;
}

// ---- Figure 1 ----------------------------------------------------------------------------------

// A row of keys at the top right of a plot: a mark and its text, 140 px apart.
struct Legend {
  std::ostream& o;
  double lx, ly;
  void add(const std::string& mark, const std::string& text) {
    o << mark << "<text x=\"" << px(lx + 9) << "\" y=\"" << px(ly + 4)
      << "\" font-size=\"12\" fill=\"#333\">" << text << "</text>\n";
    lx += 140;
  }
  // The keys of a population's dots, as Figure 1 draws them: alive, dead, failed (rings).
  void population(std::size_t alive, std::size_t dead, std::size_t failed) {
    add("<circle class=\"key\" cx=\"" + px(lx) + "\" cy=\"" + px(ly) + "\" r=\"4\" fill=\"" +
            kAliveColour + "\"/>",
        "alive (" + std::to_string(alive) + ")");
    add("<circle class=\"key\" cx=\"" + px(lx) + "\" cy=\"" + px(ly) + "\" r=\"4\" fill=\"" +
            kDeadColour + "\"/>",
        "dead (" + std::to_string(dead) + ")");
    add("<circle class=\"key\" cx=\"" + px(lx) + "\" cy=\"" + px(ly) +
            "\" r=\"4\" fill=\"none\" stroke-width=\"1.4\" stroke=\"" + kFailedColour + "\"/>",
        "failed, fitness 0 (" + std::to_string(failed) + ")");
  }
};

// What a dot's hover title says first: "id: 91.23%", or "id: failed (why)".
std::string outcome_text(const IndividualRecord& r) {
  if (r.failed)
    return esc(r.id) + ": failed" + (r.failure.empty() ? "" : " (" + esc(r.failure) + ")");
  return esc(r.id) + ": " + percent(r.fitness);
}

std::string figure_one(const Run& run) {
  Plot p;
  p.id = "fig-population";
  p.w = 1080, p.h = 440;
  p.title = "Population over time (Real et al. 2017, Figure 1)";
  p.xlabel = std::string("time since the first birth (") + run.unit.name + ")";
  p.ylabel = "validation accuracy (%)";
  double xlo = 0, xhi = run.all.empty() ? 1 : (run.t_end - run.t0) / run.unit.seconds;
  double ylo = 0, yhi = 1;
  p.xt = linear_ticks(xlo, xhi, 10);
  p.yt = linear_ticks(ylo, yhi, 5, 100);
  p.x = {xlo, xhi, false}, p.y = {ylo, yhi, false};
  p.layout();

  std::ostringstream o;
  o << p.open();
  if (run.all.empty()) o << p.empty_note("no individuals yet");
  const bool titled = run.all.size() <= kMaxTitledDots;
  auto dot = [&](const IndividualRecord& r, const char* cls, double radius) {
    const double fit = std::isfinite(r.fitness) ? std::clamp(r.fitness, 0.0, 1.0) : 0.0;
    o << "<circle class=\"" << cls << "\" cx=\"" << px(p.x(run.since_t0(r))) << "\" cy=\""
      << px(p.y(r.failed ? 0.0 : fit)) << "\" r=\"" << radius << "\">";
    if (titled) o << "<title>" << outcome_text(r) << ", " << esc(r.mutation) << "</title>";
    o << "</circle>\n";
  };
  // Dead below alive, so the living population stands out as in the paper; failures on top.
  o << "<g class=\"dots-dead\" fill=\"" << kDeadColour << "\">\n";
  for (auto* r : run.all)
    if (!run.is_alive(*r) && !r->failed) dot(*r, "dead", 2.6);
  o << "</g>\n<g class=\"dots-alive\" fill=\"" << kAliveColour << "\">\n";
  for (auto* r : run.all)
    if (run.is_alive(*r) && !r->failed) dot(*r, "alive", 3.2);
  o << "</g>\n<g class=\"dots-failed\" fill=\"none\" stroke=\"" << kFailedColour
    << "\" stroke-width=\"1.4\">\n";
  for (auto* r : run.all)
    if (r->failed) dot(*r, run.is_alive(*r) ? "alive failed" : "dead failed", 3.6);
  o << "</g>\n";

  // Legend in the top margin, right-aligned, with the counts.
  std::size_t alive_ok = 0, dead_ok = 0;
  for (auto* r : run.all)
    if (!r->failed) (run.is_alive(*r) ? alive_ok : dead_ok)++;
  Legend key{o, p.w - p.right - 420, p.top - 18};
  key.population(alive_ok, dead_ok, run.failed);
  o << "</svg>\n";
  return o.str();
}

// ---- best so far -------------------------------------------------------------------------------

struct BestPoint {
  double t;                    // since t0, in run.unit
  double flops;                // cumulative, this individual's included
  double best;                 // best validation accuracy so far
  const IndividualRecord* by;  // who holds it
  bool improved;
};

std::vector<BestPoint> best_so_far(const Run& run) {
  std::vector<BestPoint> pts;
  double cum = 0, best = -1;
  const IndividualRecord* by = nullptr;
  for (auto* r : run.all) {
    if (std::isfinite(r->flops)) cum += r->flops;
    const double fit = r->failed || !std::isfinite(r->fitness) ? 0.0 : r->fitness;
    const bool improved = fit > best;
    if (improved) best = fit, by = r;
    pts.push_back({run.since_t0(*r), cum, best, by, improved});
  }
  return pts;
}

// A staircase through the points (value held until the next improvement) and a dot at every
// improvement; `xs` gives a point's x in data units.
// The SVG path data of a step function through (x, y) points in data units, x ascending: each
// value held until the next change. Points the axis cannot show (non-finite, <= 0 on a log axis)
// are skipped; "" when none is left.
std::string step_path(const Plot& p, const std::vector<std::pair<double, double>>& xy) {
  std::string d;
  bool started = false;
  double last_y = 0, last_x = 0;
  for (auto [xv, yv] : xy) {
    if (!std::isfinite(xv) || !std::isfinite(yv) || (p.x.log && xv <= 0)) continue;
    const double X = p.x(xv), Y = p.y(yv);
    if (!started)
      d += "M" + px(X) + " " + px(Y), started = true;
    else if (Y != last_y)
      d += "H" + px(X) + "V" + px(Y);
    last_y = Y, last_x = X;
  }
  if (started) d += "H" + px(last_x);
  return d;
}

template <typename XOf>
std::string staircase(const Plot& p, const std::vector<BestPoint>& pts, XOf xs, const Run& run,
                      bool flops_axis) {
  std::ostringstream o;
  std::vector<std::pair<double, double>> xy;
  for (const BestPoint& b : pts) xy.emplace_back(xs(b), b.best);
  const std::string d = step_path(p, xy);
  if (d.empty()) return p.empty_note("no individuals with a fitness yet");
  o << "<path class=\"best-line\" d=\"" << d << "\" fill=\"none\" stroke=\"" << kBestColour
    << "\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n";
  o << "<g class=\"best-marks\" fill=\"" << kBestColour << "\">\n";
  for (const BestPoint& b : pts) {
    const double xv = xs(b);
    if (!b.improved || !std::isfinite(xv) || (p.x.log && xv <= 0)) continue;
    o << "<circle class=\"best-mark\" cx=\"" << px(p.x(xv)) << "\" cy=\"" << px(p.y(b.best))
      << "\" r=\"2.6\"><title>" << esc(b.by->id) << ": " << percent(b.best) << " at "
      << (flops_axis ? sci(b.flops) + " FLOPs" : strf("%.3g %s", b.t, run.unit.name))
      << "</title></circle>\n";
  }
  o << "</g>\n";
  return o.str();
}

void best_y_range(const std::vector<BestPoint>& pts, Plot& p) {
  double lo = 1, hi = 0;
  for (const BestPoint& b : pts) lo = std::min(lo, b.best), hi = std::max(hi, b.best);
  if (pts.empty()) lo = 0, hi = 1;
  // A little headroom over the best, never past 100%.
  const double span = std::max(hi - lo, 0.01);
  lo = std::max(0.0, lo - 0.05 * span), hi = std::min(1.0, hi + 0.05 * span);
  p.yt = linear_ticks(lo, hi, 5, 100);
  p.y = {lo, hi, false};
}

std::string best_vs_time(const Run& run, const std::vector<BestPoint>& pts) {
  Plot p;
  p.id = "fig-best-time";
  p.title = "Best validation accuracy so far vs time";
  p.xlabel = std::string("time since the first birth (") + run.unit.name + ")";
  p.ylabel = "best validation accuracy (%)";
  double xlo = 0, xhi = pts.empty() ? 1 : pts.back().t;
  p.xt = linear_ticks(xlo, xhi, 6);
  p.x = {xlo, xhi, false};
  best_y_range(pts, p);
  p.layout();
  std::string s = p.open();
  s += pts.empty() ? p.empty_note("no individuals yet")
                   : staircase(
                         p, pts, [](const BestPoint& b) { return b.t; }, run, false);
  return s + "</svg>\n";
}

std::string best_vs_flops(const Run& run, const std::vector<BestPoint>& pts) {
  Plot p;
  p.id = "fig-best-flops";
  p.title = "Best validation accuracy so far vs compute";
  p.xlabel = "cumulative FLOPs (training + validation, all individuals)";
  p.ylabel = "best validation accuracy (%)";
  double xlo = kNaN, xhi = 0;
  for (const BestPoint& b : pts)
    if (b.flops > 0) {
      if (!(xlo <= b.flops)) xlo = b.flops;
      xhi = std::max(xhi, b.flops);
    }
  const bool any = xhi > 0;
  p.xt = log_ticks(xlo, xhi);
  p.x = {xlo, xhi, true};
  best_y_range(pts, p);
  p.layout();
  std::string s = p.open();
  s += !any ? p.empty_note("no FLOP counts recorded")
            : staircase(
                  p, pts, [](const BestPoint& b) { return b.flops; }, run, true);
  return s + "</svg>\n";
}

// ---- accuracy against size ---------------------------------------------------------------------

// Whether the accuracy-against-parameters plot can place r: a log axis has no place for 0 or
// fewer parameters (a record without a count), a NaN accuracy no height.
bool sized(const IndividualRecord& r) {
  return r.params > 0 && std::isfinite(r.fitness);
}

// Every individual at its parameters (log x) and validation accuracy, coloured as in Figure 1,
// with the Pareto front as a staircase: for a size budget on the x axis, the line's height is the
// best accuracy any individual within that budget reached. Straight from the records, not
// summarise()'s birth-ordered list: a record without a birth time still has a size.
std::string accuracy_vs_params(const std::vector<IndividualRecord>& individuals,
                               const ReportOptions& opts) {
  Plot p;
  p.id = "fig-pareto";
  p.w = 1080, p.h = 400;
  p.title = "Validation accuracy vs parameters";
  p.xlabel = "trainable parameters (log scale)";
  p.ylabel = "validation accuracy (%)";
  std::vector<const IndividualRecord*> shown;
  for (const IndividualRecord& r : individuals)
    if (sized(r)) shown.push_back(&r);
  // The x range covers the limit too, so its line is on the plot even when every individual is
  // far below it.
  double xlo = kNaN, xhi = 0;
  auto cover = [&](double v) {
    if (!(xlo <= v)) xlo = v;
    xhi = std::max(xhi, v);
  };
  for (const IndividualRecord* r : shown) cover(double(r->params));
  if (opts.max_params > 0) cover(double(opts.max_params));
  p.xt = log_ticks(xlo, xhi);
  double ylo = 0, yhi = 1;
  p.yt = linear_ticks(ylo, yhi, 5, 100);
  p.x = {xlo, xhi, true}, p.y = {ylo, yhi, false};
  p.layout();

  std::ostringstream o;
  o << p.open();
  if (individuals.empty())
    o << p.empty_note("no individuals yet");
  else if (shown.empty())
    o << p.empty_note("no parameter counts recorded");

  // The limit under the dots, so none is hidden by it. Its label near accuracy 0, where only
  // failed rings and a bad start lie (the front runs along the top), haloed in white so dots
  // under it do not garble it; left of the line when the line is too near the right edge.
  if (opts.max_params > 0) {
    const double X = p.x(double(opts.max_params));
    const std::string n = std::to_string(opts.max_params);
    const bool label_left = X > p.w - p.right - 120;
    o << "<g class=\"limit\"><title>the run's parameter limit (--max-params " << n
      << ")</title><line class=\"limit-line\" x1=\"" << px(X) << "\" y1=\"" << px(p.top)
      << "\" x2=\"" << px(X) << "\" y2=\"" << px(p.h - p.bottom)
      << "\" stroke=\"#555\" stroke-width=\"1.2\" stroke-dasharray=\"6 4\"/><text x=\""
      << px(label_left ? X - 5 : X + 5) << "\" y=\"" << px(p.y(0) - 14) << "\" text-anchor=\""
      << (label_left ? "end" : "start")
      << "\" font-size=\"11\" fill=\"#333\" stroke=\"#ffffff\" stroke-width=\"3\" "
         "paint-order=\"stroke\">max params "
      << n << "</text></g>\n";
  }

  const bool titled = shown.size() <= kMaxTitledDots;
  auto dot = [&](const IndividualRecord& r, const char* cls, double radius) {
    const double fit = r.failed ? 0.0 : std::clamp(r.fitness, 0.0, 1.0);
    o << "<circle class=\"" << cls << "\" cx=\"" << px(p.x(double(r.params))) << "\" cy=\""
      << px(p.y(fit)) << "\" r=\"" << radius << "\">";
    if (titled)
      o << "<title>" << outcome_text(r) << ", " << si(double(r.params)) << " params, "
        << esc(r.mutation) << "</title>";
    o << "</circle>\n";
  };
  // Layered as Figure 1: dead, alive, failed rings on top.
  o << "<g class=\"dots-dead\" fill=\"" << kDeadColour << "\">\n";
  for (auto* r : shown)
    if (!r->alive() && !r->failed) dot(*r, "dead", 2.6);
  o << "</g>\n<g class=\"dots-alive\" fill=\"" << kAliveColour << "\">\n";
  for (auto* r : shown)
    if (r->alive() && !r->failed) dot(*r, "alive", 3.2);
  o << "</g>\n<g class=\"dots-failed\" fill=\"none\" stroke=\"" << kFailedColour
    << "\" stroke-width=\"1.4\">\n";
  for (auto* r : shown)
    if (r->failed) dot(*r, r->alive() ? "alive failed" : "dead failed", 3.6);
  o << "</g>\n";

  // The front above every dot: a few marks, each titled whatever the number of dots.
  const std::vector<std::size_t> front = pareto_front(individuals);
  std::vector<std::pair<double, double>> xy;
  for (std::size_t i : front)
    xy.emplace_back(double(individuals[i].params), std::clamp(individuals[i].fitness, 0.0, 1.0));
  if (const std::string d = step_path(p, xy); !d.empty())
    o << "<path class=\"pareto-line\" d=\"" << d << "\" fill=\"none\" stroke=\"" << kBestColour
      << "\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n";
  o << "<g class=\"pareto-marks\" fill=\"" << kBestColour
    << "\" stroke=\"#ffffff\" stroke-width=\"0.8\">\n";
  for (std::size_t k = 0; k < front.size(); ++k) {
    const IndividualRecord& r = individuals[front[k]];
    o << "<circle class=\"pareto-mark\" cx=\"" << px(p.x(xy[k].first)) << "\" cy=\""
      << px(p.y(xy[k].second)) << "\" r=\"3.4\"><title>" << outcome_text(r) << ", "
      << si(double(r.params))
      << " params: on the Pareto front (more accurate than every other of its size or "
         "smaller)</title></circle>\n";
  }
  o << "</g>\n";

  // Legend in the top margin, right-aligned, counting what this plot shows.
  std::size_t alive_ok = 0, dead_ok = 0, failed = 0;
  for (auto* r : shown) {
    if (r->failed)
      ++failed;
    else
      ++(r->alive() ? alive_ok : dead_ok);
  }
  Legend key{o, p.w - p.right - 560, p.top - 18};
  key.population(alive_ok, dead_ok, failed);
  const double lx = key.lx, ly = key.ly;
  key.add("<path class=\"key\" d=\"M" + px(lx - 6) + " " + px(ly) + "H" + px(lx + 6) +
          "\" stroke-width=\"2\" stroke=\"" + kBestColour + "\"/>",
      "Pareto front (" + std::to_string(front.size()) + ")");
  o << "</svg>\n";
  return o.str();
}

// ---- the DNA graph -----------------------------------------------------------------------------

// The backbone top to bottom, one box per vertex with its activation and shape; backbone edges as
// arrows labelled on the left ("3x3 s2 x2.0", "identity"), skips as dashed arcs on the right, each
// nested arc further out so none crosses a box; then the head (pool, fully connected, softmax).
std::string dna_graph(const CompiledDna& plan, double& width) {
  const int n = int(plan.vertices.size());
  constexpr double kBoxW = 190, kBoxH = 44, kGap = 46, kTop = 16, kBoxX = 140;
  const double cx = kBoxX + kBoxW / 2, right = kBoxX + kBoxW;
  auto box_y = [&](int i) { return kTop + i * (kBoxH + kGap); };

  // Arc levels: greedy interval colouring over the skips by span, so nested skips stack outwards
  // and two arcs share a level only when their spans do not overlap.
  std::vector<int> skips;
  for (int i = 0; i < int(plan.edges.size()); ++i)
    if (plan.edges[i].skip) skips.push_back(i);
  std::sort(skips.begin(), skips.end(), [&](int a, int b) {
    const EdgePlan &ea = plan.edges[a], &eb = plan.edges[b];
    return ea.to - ea.from != eb.to - eb.from ? ea.to - ea.from < eb.to - eb.from
                                              : ea.from < eb.from;
  });
  std::map<int, int> level;  // edge index -> level (1 = innermost)
  std::vector<std::vector<std::pair<int, int>>> used;
  for (int ei : skips) {
    const EdgePlan& e = plan.edges[ei];
    int l = 0;
    for (;; ++l) {
      if (l == int(used.size())) used.emplace_back();
      bool clash = false;
      for (auto [a, b] : used[l])
        if (e.from < b && a < e.to) clash = true;  // spans share more than an end point
      if (!clash) break;
    }
    used[l].push_back({e.from, e.to});
    level[ei] = l + 1;
  }
  constexpr double kArcBase = 34, kArcStep = 26;
  const double arcs_w = used.empty() ? 0 : kArcBase + kArcStep * (used.size() - 1) + 40;
  width = std::max(440.0, right + arcs_w + 20);
  const double head_y = box_y(n);
  const double height = head_y + kBoxH + 16;

  std::ostringstream o;
  o << "<svg class=\"dna\" id=\"fig-dna\" xmlns=\"http://www.w3.org/2000/svg\" width=\""
    << px(width) << "\" height=\"" << px(height) << "\" viewBox=\"0 0 " << px(width) << ' '
    << px(height) << "\" role=\"img\" aria-label=\"the best individual's DNA\">\n";
  o << "<defs><marker id=\"dna-arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" "
       "markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 "
       "5L0 10z\" fill=\"#444\"/></marker><marker id=\"dna-arrow-skip\" viewBox=\"0 0 10 10\" "
       "refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path "
       "d=\"M0 0L10 5L0 10z\" fill=\""
    << kSkipColour << "\"/></marker></defs>\n";

  // Backbone edges (every non-skip edge joins consecutive vertices of the topological order).
  o << "<g class=\"dna-edges\" font-size=\"12\">\n";
  for (const EdgePlan& e : plan.edges) {
    if (e.skip) continue;
    const double y0 = box_y(e.from) + kBoxH, y1 = box_y(e.to);
    const bool conv = e.type == EdgeType::Conv;
    o << "<g class=\"edge " << (conv ? "conv" : "identity") << "\"><title>" << esc(e.id) << ": "
      << (conv ? "convolution " + e.in.str() + " -> " + e.out.str() + ", " + si(double(e.params)) +
                     " params, " + sci(e.flops) + " FLOPs per image"
               : std::string("identity"))
      << "</title>";
    o << "<line x1=\"" << px(cx) << "\" y1=\"" << px(y0) << "\" x2=\"" << px(cx) << "\" y2=\""
      << px(y1 - 1) << "\" stroke=\"" << (conv ? "#444" : "#999") << "\" stroke-width=\""
      << (conv ? "1.6" : "1.2") << "\" marker-end=\"url(#dna-arrow)\"/>";
    std::string label = "identity";
    if (conv) {
      const Edge* src = plan.dna.find_edge(e.id);
      label = strf("%dx%d s%d ", e.kh, e.kw, e.stride) +
              factor_text(src ? src->depth_factor : double(e.out.c) / std::max(e.in.c, 1));
    }
    o << "<text x=\"" << px(cx - 10) << "\" y=\"" << px((y0 + y1) / 2 + 4)
      << "\" text-anchor=\"end\" fill=\"" << (conv ? "#222" : "#777") << "\""
      << (conv ? " class=\"mono\"" : " font-style=\"italic\"") << ">" << esc(label)
      << "</text></g>\n";
  }
  o << "</g>\n";

  // Skip arcs, from the right side of the source box to the right side of the target box.
  o << "<g class=\"dna-skips\" fill=\"none\" stroke=\"" << kSkipColour
    << "\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\">\n";
  for (int ei : skips) {
    const EdgePlan& e = plan.edges[ei];
    const double ya = box_y(e.from) + kBoxH / 2, yb = box_y(e.to) + kBoxH / 2;
    const double bulge = kArcBase + kArcStep * (level[ei] - 1);
    // A cubic with both handles `bulge` * 4/3 out gives an arc that peaks `bulge` from the boxes.
    const double hx = right + bulge * 4 / 3;
    o << "<path class=\"skip\" d=\"M" << px(right) << ' ' << px(ya - 6) << "C" << px(hx) << ' '
      << px(ya - 6) << ' ' << px(hx) << ' ' << px(yb + 6) << ' ' << px(right + 1) << ' '
      << px(yb + 6) << "\" marker-end=\"url(#dna-arrow-skip)\"><title>" << esc(e.id) << ": skip "
      << esc(plan.vertices[e.from].id) << " -> " << esc(plan.vertices[e.to].id)
      << (e.resizes_space() || e.resizes_channels()
              ? ", reshaped " + e.out.str() + " -> " + e.reshaped.str()
              : std::string())
      << "</title></path>\n";
  }
  o << "</g>\n";

  // Vertices.
  o << "<g class=\"dna-vertices\">\n";
  for (int i = 0; i < n; ++i) {
    const VertexPlan& v = plan.vertices[i];
    const bool bn = v.activation == Activation::BnRelu;
    const std::string what = i == 0 ? "input" : to_string(v.activation);
    const double y = box_y(i);
    o << "<g class=\"vertex " << (bn ? "bn_relu" : "linear") << "\"><title>" << esc(v.id) << ": "
      << esc(what) << ", " << v.shape.str() << " (" << si(double(v.shape.elements()))
      << " values)</title>";
    o << "<rect x=\"" << px(kBoxX) << "\" y=\"" << px(y) << "\" width=\"" << px(kBoxW)
      << "\" height=\"" << px(kBoxH) << "\" rx=\"6\" fill=\""
      << (bn ? kBnReluColour : kLinearColour) << "\" stroke=\"#6b7b8c\" stroke-width=\"1\"/>";
    o << "<text x=\"" << px(cx) << "\" y=\"" << px(y + 18)
      << "\" text-anchor=\"middle\" font-size=\"12\" fill=\"#333\">" << esc(v.id) << " &#183; "
      << esc(what) << "</text>";
    o << "<text x=\"" << px(cx) << "\" y=\"" << px(y + 35)
      << "\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"600\" fill=\"#111\">"
      << v.shape.str() << "</text></g>\n";
  }
  // The head after the output vertex.
  const double y0 = box_y(n - 1) + kBoxH;
  o << "<line x1=\"" << px(cx) << "\" y1=\"" << px(y0) << "\" x2=\"" << px(cx) << "\" y2=\""
    << px(head_y - 1) << "\" stroke=\"#444\" stroke-width=\"1.6\" "
    << "marker-end=\"url(#dna-arrow)\"/>\n";
  o << "<rect class=\"head\" x=\"" << px(kBoxX - 20) << "\" y=\"" << px(head_y) << "\" width=\""
    << px(kBoxW + 40) << "\" height=\"" << px(kBoxH) << "\" rx=\"" << px(kBoxH / 2)
    << "\" fill=\"#ececec\" stroke=\"#888\"/>\n";
  o << "<text x=\"" << px(cx) << "\" y=\"" << px(head_y + 18)
    << "\" text-anchor=\"middle\" font-size=\"12\" fill=\"#333\">global pool &#8594; fc &#8594; "
       "softmax</text>\n";
  o << "<text x=\"" << px(cx) << "\" y=\"" << px(head_y + 35)
    << "\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"600\" fill=\"#111\">"
    << plan.output().shape.c << " &#8594; " << plan.classes << " classes</text>\n";
  o << "</g>\n</svg>\n";
  return o.str();
}

// ---- the page ----------------------------------------------------------------------------------

constexpr const char* kStyle = R"(
body{margin:0;background:#fff;color:#222;
  font:14px/1.45 "Helvetica Neue",Helvetica,Arial,"Liberation Sans",sans-serif}
main{max-width:1100px;margin:0 auto;padding:22px 10px 48px}
h1{font-size:22px;margin:0 0 2px;font-weight:600;overflow-wrap:anywhere}
h2{font-size:16px;margin:30px 0 8px;font-weight:600;
  border-bottom:1px solid #e5e5e5;padding-bottom:4px}
.sub{color:#666;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(118px,1fr));gap:8px;
  margin:16px 0 4px}
.card{border:1px solid #e2e2e2;border-radius:6px;padding:6px 11px}
.card b{display:block;font-size:18px;font-weight:600;white-space:nowrap}
.card span{color:#777;font-size:10.5px;text-transform:uppercase;letter-spacing:.03em;
  white-space:nowrap}
figure{margin:14px 0}
figcaption{color:#555;font-size:12.5px;margin-top:2px;max-width:1080px}
.row{display:flex;gap:20px;flex-wrap:wrap;align-items:flex-start}
.row>figure{flex:none}
svg text{font-family:inherit}
.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace}
svg .mono{font-size:11.5px}
.note{color:#a33;background:#fff6f6;border:1px solid #f0d0d0;border-radius:4px;padding:8px 12px}
dl{display:grid;grid-template-columns:auto 1fr;gap:3px 14px;margin:6px 0;font-size:13px}
dt{color:#777}
dd{margin:0;overflow-wrap:anywhere}
.lineage{font-size:12.5px;color:#444;margin:10px 0 0;padding-left:18px}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:12.5px}
table .mono{font-size:11.5px}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{border-bottom:1.5px solid #444;font-weight:600}
.l{text-align:left}
td.wrap{white-space:normal;min-width:150px}
td small{color:#777}
tr.best td{background:#f1f8ef}
tbody tr:hover td{background:#f4f8fc}
.settings b{font-weight:600;color:#333}
.card small{font-size:13px;color:#777;font-weight:400}
.tag{display:inline-block;border-radius:3px;padding:0 6px;font-size:11px;border:1px solid}
.tag.alive{color:#1a5e8f;background:#e6f0f9;border-color:#9cc0e0}
.tag.dead{color:#59616a;background:#f1f3f5;border-color:#c9ced4}
.tag.failed{color:#a3201f;background:#fcebeb;border-color:#eba9a9}
)";

// Everything before a page's heading, for the run's page and the comparison page alike; `kind`
// ends the browser's title ("evo report", "evo comparison").
std::string page_head(const std::string& title, const char* kind, const std::string& style) {
  return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
         "<title>" + esc(title) + " &#8212; " + kind + "</title>\n<style>" + style +
         "</style>\n</head>\n<body>\n<main>\n";
}

std::string card(const std::string& label, const std::string& value, const std::string& hint = "") {
  return "<div class=\"card\"" + (hint.empty() ? "" : " title=\"" + esc(hint) + "\"") + "><span>" +
         label + "</span><b>" + value + "</b></div>\n";
}

std::string state_tag(const Run& run, const IndividualRecord& r) {
  if (r.failed) return "<span class=\"tag failed\">failed</span>";
  return run.is_alive(r) ? "<span class=\"tag alive\">alive</span>"
                         : "<span class=\"tag dead\">dead</span>";
}

std::string mutation_text(const IndividualRecord& r) {
  if (r.mutation.empty() || r.mutation == "initial") return "<small>initial</small>";
  std::string s = esc(r.mutation);
  if (!r.detail.empty()) s += " <small>" + esc(r.detail) + "</small>";
  return s;
}

// A duration in the unit that reads best: "3.42 h", "12.5 min", "40 s".
std::string duration_text(double seconds) {
  if (!std::isfinite(seconds)) return "&mdash;";
  if (seconds >= 2 * 3600) return strf("%.2f h", seconds / 3600);
  if (seconds >= 120) return strf("%.1f min", seconds / 60);
  return strf("%.0f s", seconds);
}

std::string born_text(const Run& run, const IndividualRecord& r) {
  return duration_text(r.birth_time - run.t0);
}

std::string top_table(const Run& run, int top) {
  std::vector<const IndividualRecord*> order = run.all;
  std::stable_sort(order.begin(), order.end(), better);
  if (int(order.size()) > top) order.resize(std::size_t(std::max(top, 0)));
  std::ostringstream o;
  o << "<div class=\"table-wrap\"><table id=\"top\">\n<thead><tr><th>#</th><th "
       "class=\"l\">id</th><th>val acc</th>"
       "<th>test acc</th><th>params</th><th>FLOPs</th><th>lr</th><th class=\"l\">mutation</th>"
       "<th class=\"l\">parent</th><th title=\"time since the first birth\">born</th>"
       "<th class=\"l\">state</th></tr></thead>\n<tbody>\n";
  int rank = 0;
  for (const IndividualRecord* r : order) {
    o << "<tr" << (r == run.best ? " class=\"best\"" : "") << " title=\""
      << esc(r->worker + (r->host.empty() ? "" : " on " + r->host)) << ", born "
      << utc_text(r->birth_time)
      << strf(", trained %.0f s, %lld steps", r->train_seconds, static_cast<long long>(r->steps))
      << (r->failed && !r->failure.empty() ? ", failure: " + esc(r->failure) : "") << "\">";
    o << "<td>" << ++rank << "</td><td class=\"l mono\">" << esc(r->id) << "</td><td>"
      << (r->failed ? std::string("0 <small>failed</small>") : percent(r->fitness)) << "</td><td>"
      << percent(r->test_accuracy) << "</td><td>" << si(double(r->params)) << "</td><td>"
      << sci(r->flops) << "</td><td>" << strf("%.3g", r->learning_rate)
      << "</td><td class=\"l wrap\">" << mutation_text(*r) << "</td><td class=\"l mono\">"
      << (r->parent.empty() ? "&mdash;" : esc(r->parent)) << "</td><td>" << born_text(run, *r)
      << "</td><td class=\"l\">" << state_tag(run, *r) << "</td></tr>\n";
  }
  if (order.empty()) o << "<tr><td colspan=\"11\" class=\"l\">no individuals yet</td></tr>\n";
  o << "</tbody></table></div>\n";
  return o.str();
}

// The best individual's facts and its line of descent (the last mutations that made it).
std::string best_panel(const Run& run, const IndividualRecord& b, const ReportOptions& opts) {
  std::ostringstream o;
  o << "<dl>\n<dt>id</dt><dd class=\"mono\">" << esc(b.id) << " " << state_tag(run, b)
    << "</dd>\n<dt>validation</dt><dd>" << percent(b.fitness) << "</dd>\n<dt>test</dt><dd>"
    << percent(b.test_accuracy) << "</dd>\n<dt>learning rate</dt><dd>"
    << strf("%.3g", b.learning_rate) << "</dd>\n<dt>parameters</dt><dd>" << si(double(b.params))
    << "</dd>\n<dt>FLOPs</dt><dd>" << sci(b.flops)
    << " <small>(training + validation)</small></dd>\n<dt>mutation</dt><dd>" << mutation_text(b)
    << "</dd>\n<dt>born</dt><dd>" << born_text(run, b) << " <small>(" << utc_text(b.birth_time)
    << ")</small></dd>\n<dt>trained by</dt><dd>"
    << esc(b.worker + (b.host.empty() ? "" : " on " + b.host))
    << strf(", %.0f s, %lld steps", b.train_seconds, static_cast<long long>(b.steps))
    << "</dd>\n<dt>input</dt><dd>" << opts.height << "x" << opts.width << "x" << opts.channels
    << ", " << opts.classes << " classes</dd>\n</dl>\n";

  std::map<std::string, const IndividualRecord*> by_id;
  for (auto* r : run.all) by_id[r->id] = r;
  std::vector<const IndividualRecord*> line;
  for (const IndividualRecord* r = &b; r && line.size() <= run.all.size();) {
    line.push_back(r);
    auto it = by_id.find(r->parent);
    r = r->parent.empty() || it == by_id.end() ? nullptr : it->second;
  }
  constexpr std::size_t kShown = 8;
  o << "<div class=\"sub\">lineage: " << line.size() - 1 << " ancestor"
    << (line.size() == 2 ? "" : "s")
    << " in the records; the latest:</div>\n<ol class=\"lineage\">\n";
  for (std::size_t i = 0; i < line.size() && i < kShown; ++i)
    o << "<li><span class=\"mono\">" << esc(line[i]->id) << "</span> "
      << percent(line[i]->fitness, 1) << " &#8592; " << mutation_text(*line[i]) << "</li>\n";
  o << "</ol>\n";
  return o.str();
}

}  // namespace

std::vector<std::size_t> pareto_front(const std::vector<IndividualRecord>& individuals) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < individuals.size(); ++i)
    if (!individuals[i].failed && sized(individuals[i])) order.push_back(i);
  // By params, the most accurate first within one size: one sweep then keeps exactly those more
  // accurate than everything before them (smaller, or as small and more accurate), plus exact
  // copies of the last one kept. O(n log n); a run has up to ~10^5 records.
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const IndividualRecord &ra = individuals[a], &rb = individuals[b];
    if (ra.params != rb.params) return ra.params < rb.params;
    if (ra.fitness != rb.fitness) return ra.fitness > rb.fitness;
    return a < b;
  });
  std::vector<std::size_t> front;
  for (std::size_t i : order) {
    const IndividualRecord& r = individuals[i];
    const IndividualRecord* last = front.empty() ? nullptr : &individuals[front.back()];
    if (!last || r.fitness > last->fitness ||
        (r.params == last->params && r.fitness == last->fitness))
      front.push_back(i);
  }
  return front;
}

std::string render_report(const std::vector<IndividualRecord>& individuals,
                          const ReportOptions& opts) {
  const Run run = summarise(individuals);
  const std::vector<BestPoint> pts = best_so_far(run);
  const double generated =
      std::isfinite(opts.generated_at) ? opts.generated_at : double(std::time(nullptr));
  std::ostringstream o;
  o << page_head(opts.title, "evo report", kStyle);

  o << "<h1>" << esc(opts.title)
    << "</h1>\n<div class=\"sub\">Large-scale evolution of image "
       "classifiers (Real et al. 2017)"
    << (run.all.empty() ? "" : " &#183; first birth " + utc_text(run.t0))
    << " &#183; report generated " << utc_text(generated) << "</div>\n";
  if (!opts.settings.empty()) {
    o << "<div class=\"sub settings\">";
    for (std::size_t i = 0; i < opts.settings.size(); ++i)
      o << (i ? " &#183; " : "") << esc(opts.settings[i].first) << " <b>"
        << esc(opts.settings[i].second) << "</b>";
    o << "</div>\n";
  }

  std::size_t alive_count = 0;
  for (auto* r : run.all) alive_count += run.is_alive(*r);
  o << "<div class=\"cards\" id=\"totals\">\n"
    << card("individuals", std::to_string(run.all.size()))
    << card("alive", std::to_string(alive_count) +
                         (opts.population_size > 0
                              ? " <small>/ " + std::to_string(opts.population_size) + "</small>"
                              : ""))
    << card("failed", std::to_string(run.failed))
    << card("children / hour",
            run.children_per_hour > 0 ? strf("%.1f", run.children_per_hour) : "&mdash;",
            "births per hour between the first and the last birth")
    << card("span", duration_text(run.all.empty() ? 0 : run.t_end - run.t0),
            "from the first birth to the last")
    << card("total FLOPs", sci(run.total_flops), "training + validation, every individual")
    << card("best validation", run.best ? percent(run.best->fitness) : "&mdash;",
            run.best ? "individual " + run.best->id : std::string())
    << card("best's test acc",
            run.best && std::isfinite(run.best->test_accuracy) ? percent(run.best->test_accuracy)
            : run.best && run.best->id == opts.final_best_id && std::isfinite(opts.final_best_test)
                ? percent(opts.final_best_test)
                : "&mdash;",
            "measured on the test set when the search ended")
    << card("ensemble test acc",
            std::isfinite(opts.final_ensemble_test) ? percent(opts.final_ensemble_test)
                                                    : "&mdash;",
            opts.final_ensemble_size > 0
                ? "averaged softmax of the top " + std::to_string(opts.final_ensemble_size)
                : std::string());
  if (!opts.final_answer.empty() && std::isfinite(opts.final_answer_test))
    o << card("answer's test acc", percent(opts.final_answer_test),
              "the run's answer, what evo export writes: the " + opts.final_answer);
  o << "</div>\n";

  o << "<figure>\n"
    << figure_one(run)
    << "<figcaption>Every individual ever trained, at its birth (x) and validation accuracy (y), "
       "as in the paper's Figure 1. Blue: alive now; grey: killed by selection; red rings: "
       "children whose training failed (fitness 0). Hover a dot for its id.</figcaption>\n"
       "</figure>\n";

  o << "<div class=\"row\">\n<figure>\n"
    << best_vs_time(run, pts)
    << "<figcaption>Best validation accuracy among the individuals born so far.</figcaption>"
       "\n</figure>\n<figure>\n"
    << best_vs_flops(run, pts)
    << "<figcaption>The same against the compute spent so far (log scale).</figcaption>\n"
       "</figure>\n</div>\n";

  o << "<figure>\n"
    << accuracy_vs_params(individuals, opts)
    << "<figcaption>Every individual with a parameter count, at its trainable parameters (x, log "
       "scale) and validation accuracy (y); colours as in Figure 1. Green: the Pareto front, the "
       "individuals more accurate than every other of their size or smaller; the line's height "
       "over a size is the best accuracy reached within it."
    << (opts.max_params > 0
            ? " Dashed: the run's limit, --max-params " + std::to_string(opts.max_params) + "."
            : std::string())
    << " Hover a dot for its id.</figcaption>\n</figure>\n";

  o << "<h2>Best individual";
  if (run.best) o << " &#183; <span class=\"mono\">" << esc(run.best->id) << "</span>";
  o << "</h2>\n";
  if (run.best) {
    std::string note = opts.best_dna_note, graph;
    double graph_w = 0;
    if (opts.best_dna) {
      try {
        const CompiledDna plan =
            compile(*opts.best_dna, opts.height, opts.width, opts.channels, opts.classes);
        graph = dna_graph(plan, graph_w);
        graph += "<figcaption>" + esc(opts.best_dna_id.empty() ? run.best->id : opts.best_dna_id) +
                 "'s DNA compiled for " + ActShape{opts.height, opts.width, opts.channels}.str() +
                 " images: " + std::to_string(plan.vertices.size()) + " vertices, " +
                 si(double(plan.param_count)) + " parameters, " + sci(plan.forward_flops) +
                 " forward FLOPs per image. Edge labels: filter height x width, stride, depth "
                 "factor; dashed arcs: skip connections.</figcaption>\n";
      } catch (const std::exception& e) {
        note = std::string("Its DNA does not compile for this input: ") + e.what();
      }
    } else if (note.empty()) {
      note = "Its DNA is not available.";
    }
    o << "<div class=\"row\">\n";
    // The figure is as wide as its drawing, so the caption wraps under it and the facts sit beside.
    if (!graph.empty())
      o << "<figure style=\"width:" << px(graph_w) << "px\">\n" << graph << "</figure>\n";
    o << "<div style=\"flex:1;min-width:300px\">\n";
    if (!note.empty()) o << "<p class=\"note\">" << esc(note) << "</p>\n";
    o << best_panel(run, *run.best, opts) << "</div>\n</div>\n";
  } else {
    o << "<p class=\"sub\">No individual has a fitness yet.</p>\n";
  }

  if (!opts.retrained.empty()) {
    o << (opts.retrained_by_search ? "<h2>Final phase (the search's last minutes)</h2>\n"
                                   : "<h2>Retrained (evo retrain)</h2>\n")
      << "<p class=\"sub\">" << esc(opts.retrained_how)
      << "</p>\n<div class=\"table-wrap\"><table id=\"retrained\">\n<thead><tr><th>#</th>"
         "<th class=\"l\">id</th><th>params</th><th>steps</th><th title=\"its weights from the "
         "search\">test before</th><th>test after</th><th>val after</th></tr></thead>\n"
         "<tbody>\n";
    int rank = 0;
    for (const ReportOptions::Retrained& r : opts.retrained)
      o << "<tr><td>" << ++rank << "</td><td class=\"l mono\">" << esc(r.id) << "</td><td>"
        << si(double(r.parameters)) << "</td><td>" << r.steps << "</td><td>"
        << percent(r.test_before) << "</td><td>"
        << (r.failed ? std::string("<small>failed</small> ") : std::string())
        << percent(r.test_after) << "</td><td>" << percent(r.val_after) << "</td></tr>\n";
    o << "<tr class=\"best\"><td></td><td class=\"l\">ensemble (averaged softmax of "
      << opts.retrained.size() << ")</td><td></td><td></td><td></td><td>"
      << percent(opts.retrained_ensemble_test) << "</td><td></td></tr>\n</tbody></table></div>\n";
  }

  o << "<h2>Top " << std::min<std::size_t>(std::size_t(std::max(opts.top, 0)), run.all.size())
    << " individuals by validation accuracy</h2>\n"
    << top_table(run, opts.top) << "</main>\n</body>\n</html>\n";
  return o.str();
}

namespace {

// A settings value as the header shows it: strings bare, everything else as compact JSON.
std::string setting_text(const nlohmann::json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// The input shape and classes the best DNA is compiled for: run.json's settings when they give
// them ("height", "width", "channels", "classes" at the top, or "input" as {height, width,
// channels} or [h, w, c]), else what the data spec implies, else 28x28x1 and 10 classes.
void input_from_settings(const nlohmann::json& st, ReportOptions& opts) {
  if (!st.is_object()) return;
  auto get_int = [](const nlohmann::json& j, std::initializer_list<const char*> keys, int& out) {
    for (const char* k : keys)
      if (auto it = j.find(k); it != j.end() && it->is_number_integer() && it->get<int>() > 0) {
        out = it->get<int>();
        return true;
      }
    return false;
  };
  if (auto it = st.find("data"); it != st.end() && it->is_string()) {
    const std::string data = it->get<std::string>();
    auto starts = [&](const char* p) { return data.rfind(p, 0) == 0; };
    if (starts("cifar100"))
      opts.height = opts.width = 32, opts.channels = 3, opts.classes = 100;
    else if (starts("cifar10"))
      opts.height = opts.width = 32, opts.channels = 3, opts.classes = 10;
    else if (starts("mnist") || starts("fashion-mnist"))
      opts.height = opts.width = 28, opts.channels = 1, opts.classes = 10;
  }
  get_int(st, {"height", "h"}, opts.height);
  get_int(st, {"width", "w"}, opts.width);
  get_int(st, {"channels", "c"}, opts.channels);
  get_int(st, {"classes"}, opts.classes);
  if (auto it = st.find("input"); it != st.end()) {
    if (it->is_object()) {
      get_int(*it, {"height", "h"}, opts.height);
      get_int(*it, {"width", "w"}, opts.width);
      get_int(*it, {"channels", "c"}, opts.channels);
    } else if (it->is_array() && it->size() == 3 && (*it)[0].is_number_integer() &&
               (*it)[1].is_number_integer() && (*it)[2].is_number_integer()) {
      opts.height = (*it)[0].get<int>(), opts.width = (*it)[1].get<int>(),
      opts.channels = (*it)[2].get<int>();
    }
  }
}

// The search's size limits when run.json records them (evo search writes "max_params" and
// "max_flops" only when set). A value that is not a positive number is no limit: the page is
// drawn without the line rather than refused.
void limits_from_settings(const nlohmann::json& st, ReportOptions& opts) {
  if (!st.is_object()) return;
  if (auto it = st.find("max_params"); it != st.end()) {
    if (it->is_number_unsigned()) {
      const auto v = it->get<std::uint64_t>();
      if (v > 0 && v <= std::uint64_t(std::numeric_limits<int64_t>::max()))
        opts.max_params = int64_t(v);
    } else if (it->is_number_integer()) {
      opts.max_params = std::max<int64_t>(0, it->get<int64_t>());
    } else if (it->is_number_float()) {  // 1e6 written by hand
      const double v = it->get<double>();
      if (v >= 1 && v < 9.2e18) opts.max_params = int64_t(v);
    }
  }
  if (auto it = st.find("max_flops"); it != st.end() && it->is_number()) {
    const double v = it->get<double>();
    if (std::isfinite(v) && v > 0) opts.max_flops = v;
  }
}

// Writes next to the destination, then renames: readers see the old page or the new one, never
// a half-written one, and two writers cannot interleave.
void write_atomically(const std::string& path, const std::string& text) {
  write_file_atomic(path, text, "report");
}

// The same checks for `evo report` with one folder or many: a clear error naming the folder (a
// usage error, exit 2, as every subcommand's for a path that is not a run folder).
void check_run_folder(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec))
    throw UsageError("report: '" + run_dir + "' is not a folder; give a search's --run-dir");
  if (!fs::is_regular_file(fs::path(run_dir) / "run.json", ec))
    throw UsageError("report: '" + run_dir + "' is not a run folder (it has no run.json); give a " +
                "search's --run-dir");
}

struct FinalResults {
  std::string best_id, answer;
  double best_test = kNaN, ensemble_test = kNaN, answer_test = kNaN;
  int ensemble_size = 0;
};

// The end-of-search test results, when a search left them (a damaged file is ignored: the page
// then says "not measured", and nothing else depends on it).
FinalResults read_final(const std::string& run_dir) {
  FinalResults f;
  try {
    const fs::path path = fs::path(run_dir) / "final.json";
    if (fs::exists(path)) {
      const nlohmann::json j =
          parse_json_limited(read_file_limited(path.string(), 1 << 20, "final results"), path.string());
      if (!j.is_object()) return f;
      if (j.contains("best_id") && j["best_id"].is_string())
        f.best_id = j["best_id"].get<std::string>();
      if (j.contains("best_test") && j["best_test"].is_number())
        f.best_test = j["best_test"].get<double>();
      if (j.contains("ensemble_test") && j["ensemble_test"].is_number())
        f.ensemble_test = j["ensemble_test"].get<double>();
      if (j.contains("ensemble_size") && j["ensemble_size"].is_number_integer())
        f.ensemble_size = j["ensemble_size"].get<int>();
      if (j.contains("answer") && j["answer"].is_string()) f.answer = j["answer"].get<std::string>();
      if (j.contains("answer_test_accuracy") && j["answer_test_accuracy"].is_number())
        f.answer_test = j["answer_test_accuracy"].get<double>();
    }
  } catch (const std::exception&) {
  }
  return f;
}

// What `evo retrain` left in RUN_DIR/final/retrain.json, when it did (a damaged file is ignored,
// as final.json is: the page then has no such section).
void read_retrained(const std::string& run_dir, ReportOptions& opts) {
  try {
    const fs::path path = fs::path(run_dir) / "final" / "retrain.json";
    if (!fs::exists(path)) return;
    const nlohmann::json j = parse_json_limited(
        read_file_limited(path.string(), 1 << 20, "retrain summary"), path.string());
    if (!j.is_object() || !j.contains("individuals") || !j["individuals"].is_array()) return;
    auto num = [](const nlohmann::json& o, const char* key) {
      return o.contains(key) && o[key].is_number() ? o[key].get<double>() : kNaN;
    };
    for (const nlohmann::json& r : j["individuals"]) {
      if (!r.is_object()) continue;
      ReportOptions::Retrained row;
      if (r.contains("id") && r["id"].is_string()) row.id = r["id"].get<std::string>();
      row.parameters = int64_t(std::max(0.0, num(r, "parameters")));
      row.test_before = num(r, "test_before");
      row.test_after = num(r, "test_after");
      row.val_after = num(r, "val_after");
      row.steps = int(std::max(0.0, num(r, "steps")));
      row.failed = r.contains("failed") && r["failed"].is_boolean() && r["failed"].get<bool>();
      opts.retrained.push_back(row);
    }
    opts.retrained_ensemble_test = num(j, "ensemble_test");
    auto text = [&](const char* key) {
      return j.contains(key) ? setting_text(j[key]) : std::string("?");
    };
    if (j.contains("phase") && j["phase"] == "search") {
      // The search's own final phase (final.cpp): a time budget, not a step count.
      opts.retrained_by_search = true;
      const std::string from = text("from");
      opts.retrained_how = "the search's final phase: " + text("seconds_each") + " s each " +
                           (from == "weights" ? "from the search's weights"
                            : from == "scratch"  // runs of before 2026-12-08
                                ? "from fresh weights, " + text("width") + "x wider"
                            : text("width") != "auto"
                                ? "from fresh weights, " + text("width") +
                                      "x wider (a net without a convolution to widen: on from "
                                      "its weights)"
                                : "from fresh weights at a width chosen to fit the time (" +
                                      text("width") + ")") +
                           ", a cosine rate over that time, "
                           "batch " + text("batch") + ", augmentation " + text("augment") +
                           ", on " + text("device") + " (RUN_DIR/final/)";
      return;
    }
    opts.retrained_how = text("steps") + " steps of batch " + text("batch") + " each, from " +
                         (text("from") == "scratch" ? "fresh weights" : "the search's weights") +
                         ", augmentation " + text("augment") + ", on " + text("device") +
                         " (RUN_DIR/final/)";
  } catch (const std::exception&) {
  }
}

// A CSV field (RFC 4180): as it is, or quoted with its quotes doubled when it holds a comma, a
// quote or a line break.
std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string q = "\"";
  for (char c : v) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// A number with all the digits that tell it apart (17 significant), or "" when not measured.
std::string csv_number(double x) {
  if (!std::isfinite(x)) return "";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

}  // namespace

std::string trials_csv(const std::vector<IndividualRecord>& individuals) {
  std::vector<const IndividualRecord*> rows;
  double first = INFINITY;
  for (const IndividualRecord& r : individuals) {
    rows.push_back(&r);
    if (std::isfinite(r.birth_time)) first = std::min(first, r.birth_time);
  }
  // By birth (an individual not yet born, NaN, last), then by id: the same file for the same run.
  std::stable_sort(rows.begin(), rows.end(), [](const IndividualRecord* a, const IndividualRecord* b) {
    const bool fa = std::isfinite(a->birth_time), fb = std::isfinite(b->birth_time);
    if (fa != fb) return fa;
    if (fa && a->birth_time != b->birth_time) return a->birth_time < b->birth_time;
    return a->id < b->id;
  });
  std::string out =
      "id,parent,mutation,born_s,birth_time,death_time,alive,failed,val_accuracy,test_accuracy,"
      "params,steps,train_seconds,flops,learning_rate,worker,host,killed_by,failure,detail\n";
  for (const IndividualRecord* r : rows) {
    const std::vector<std::string> f = {
        csv_field(r->id),
        csv_field(r->parent),
        csv_field(r->mutation),
        csv_number(std::isfinite(r->birth_time) ? r->birth_time - first : NAN),
        csv_number(r->birth_time),
        csv_number(r->death_time),
        r->alive() ? "1" : "0",
        r->failed ? "1" : "0",
        r->failed ? "" : csv_number(r->fitness),
        csv_number(r->test_accuracy),
        std::to_string(r->params),
        std::to_string(r->steps),
        csv_number(r->train_seconds),
        csv_number(r->flops),
        csv_number(r->learning_rate),
        csv_field(r->worker),
        csv_field(r->host),
        csv_field(r->killed_by),
        csv_field(r->failure),
        csv_field(r->detail)};
    for (std::size_t i = 0; i < f.size(); ++i) out += (i ? "," : "") + f[i];
    out += "\n";
  }
  return out;
}

ReportWritten write_report(const std::string& run_dir, const std::string& out_path) {
  check_run_folder(run_dir);
  const Population pop(run_dir);
  ReportWritten written;
  written.path = out_path.empty() ? default_report_path(run_dir) : out_path;
  const std::vector<IndividualRecord> all = pop.all_individuals(&written.damaged);

  ReportOptions opts;
  opts.title = run_dir;
  opts.population_size = pop.size();
  if (pop.settings().is_object())
    for (const auto& [key, value] : pop.settings().items())
      opts.settings.emplace_back(key, setting_text(value));
  // How long the run was meant to take (run.json "created_with", its creator's --time-limit; a
  // resume may have run with another).
  if (pop.recorded().contains("time_limit") && pop.recorded()["time_limit"].is_number()) {
    const double t = pop.recorded()["time_limit"].get<double>();
    const long m = std::lround(t / 60);
    opts.settings.emplace_back("time_limit",
                               !(t > 0)  ? std::string("none")
                               : t < 120 ? strf("%.0fs", t)
                               : m < 60  ? strf("%ldm", m)
                               : m % 60  ? strf("%ldh%02ldm", m / 60, m % 60)
                                         : strf("%ldh", m / 60));
  }
  input_from_settings(pop.settings(), opts);
  limits_from_settings(pop.settings(), opts);

  // The best individual's DNA; when its file cannot be read (being killed this very moment, or
  // damaged), the next best's, and the page says so.
  std::vector<const IndividualRecord*> order;
  for (const IndividualRecord& r : all)
    if (!r.failed && std::isfinite(r.fitness) && std::isfinite(r.birth_time)) order.push_back(&r);
  std::stable_sort(order.begin(), order.end(), better);
  std::string missing;
  for (std::size_t i = 0; i < order.size() && i < 5 && !opts.best_dna; ++i) {
    try {
      opts.best_dna = load_dna(pop.dna_path(order[i]->id));
      opts.best_dna_id = order[i]->id;
    } catch (const std::exception& e) {
      if (missing.empty()) missing = e.what();
    }
  }
  const FinalResults fin = read_final(run_dir);
  opts.final_best_id = fin.best_id;
  opts.final_best_test = fin.best_test;
  opts.final_ensemble_test = fin.ensemble_test;
  opts.final_ensemble_size = fin.ensemble_size;
  opts.final_answer = fin.answer;
  opts.final_answer_test = fin.answer_test;
  read_retrained(run_dir, opts);
  if (!missing.empty())
    opts.best_dna_note = opts.best_dna ? "The best DNA could not be read (" + missing +
                                             "); drawn instead: " + opts.best_dna_id + "'s."
                                       : "Its DNA could not be read: " + missing;
  write_atomically(written.path, render_report(all, opts));
  // The trial log beside it; a run folder this process may not write into (a report written
  // elsewhere with --out) keeps the page and says why the log is missing.
  const std::string trials = (fs::path(run_dir) / "trials.csv").string();
  try {
    write_file_atomic(trials, trials_csv(all), "trial log");
    written.trials_path = trials;
  } catch (const Error& e) {
    written.damaged.push_back(trials + ": not written: " + e.what());
  }
  return written;
}

void save_final_results(const std::string& run_dir, const std::string& best_id, double best_test,
                        double ensemble_test, int ensemble_size, const nlohmann::json& extra) {
  nlohmann::json j = extra.is_object() ? extra : nlohmann::json::object();
  j["format"] = "evo-final/1";
  j["best_id"] = best_id;
  j["best_test"] = std::isfinite(best_test) ? nlohmann::json(best_test) : nlohmann::json();
  j["ensemble_test"] =
      std::isfinite(ensemble_test) ? nlohmann::json(ensemble_test) : nlohmann::json();
  j["ensemble_size"] = ensemble_size;
  write_atomically((fs::path(run_dir) / "final.json").string(), j.dump(2) + "\n");
}

std::string default_report_path(const std::string& run_dir) {
  return (fs::path(run_dir) / "report.html").string();
}

// ---- comparing runs (a study) ------------------------------------------------------------------

namespace {

// One colour per setting: matplotlib's tab10 without its grey, which the page uses for text.
constexpr const char* kSettingColours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                           "#8c564b", "#e377c2", "#bcbd22", "#17becf"};
constexpr std::size_t kSettingColourCount = sizeof kSettingColours / sizeof kSettingColours[0];

using Curve = std::vector<std::pair<double, double>>;  // (x, best so far), x ascending

// What the comparison takes from one run.
struct RunSummary {
  const CompareRun* src = nullptr;
  Run run;              // summarise(src->individuals); points into them
  double start = kNaN;  // unix seconds: the earliest birth minus that child's training time
  Curve by_time;        // (seconds since start, best validation accuracy so far)
  Curve by_flops;       // (cumulative FLOPs, best so far)
  double best_val = kNaN, best_test = kNaN, ensemble_test = kNaN;
  double children = 0, children_per_hour = kNaN, total_flops = kNaN;
  std::string seed;
};

RunSummary summarise_run(const CompareRun& src) {
  RunSummary s;
  s.src = &src;
  s.run = summarise(src.individuals);
  const Run& run = s.run;
  // Time since the run started, not since its first birth: a setting whose children train longer
  // is born later, and the comparison must charge it for that time.
  for (const IndividualRecord* r : run.all) {
    const double trained =
        std::isfinite(r->train_seconds) && r->train_seconds > 0 ? r->train_seconds : 0.0;
    if (!(s.start <= r->birth_time - trained)) s.start = r->birth_time - trained;
  }
  const std::vector<BestPoint> pts = best_so_far(run);
  for (std::size_t i = 0; i < pts.size(); ++i) {
    s.by_time.emplace_back(run.all[i]->birth_time - s.start, pts[i].best);
    s.by_flops.emplace_back(pts[i].flops, pts[i].best);
  }
  if (run.best) s.best_val = run.best->fitness;
  s.best_test = std::isfinite(src.final_best_test)                   ? src.final_best_test
                : run.best && std::isfinite(run.best->test_accuracy) ? run.best->test_accuracy
                                                                     : kNaN;
  s.ensemble_test = src.final_ensemble_test;
  s.children = double(run.all.size());
  if (run.children_per_hour > 0) s.children_per_hour = run.children_per_hour;
  if (!run.all.empty()) s.total_flops = run.total_flops;
  if (src.settings.is_object())
    if (auto it = src.settings.find("seed"); it != src.settings.end()) s.seed = setting_text(*it);
  return s;
}

// Runs that share the values of every setting that differs somewhere.
struct Group {
  std::string label;  // "population=8, steps=500"; raw text, escaped where written
  const char* colour = kSettingColours[0];
  std::vector<const RunSummary*> runs;
};

// The settings every run shares (for the header) and the groups, in order of first appearance.
std::vector<Group> group_runs(const std::vector<RunSummary>& runs,
                              std::vector<std::pair<std::string, std::string>>& shared) {
  static const nlohmann::json kUnset = nlohmann::json::object();  // never a settings value here
  auto value_of = [](const RunSummary& r, const std::string& key) -> const nlohmann::json& {
    if (!r.src->settings.is_object()) return kUnset;
    auto it = r.src->settings.find(key);
    return it == r.src->settings.end() ? kUnset : *it;
  };
  std::map<std::string, bool> differs;  // every key of every run, sorted
  for (const RunSummary& r : runs)
    if (r.src->settings.is_object())
      for (const auto& item : r.src->settings.items()) differs[item.key()] = false;
  for (auto& [key, d] : differs)
    for (const RunSummary& r : runs) d = d || value_of(r, key) != value_of(runs.front(), key);
  for (const std::string& key : kCompareIgnored) differs.erase(key);
  for (const auto& [key, d] : differs)
    if (!d) shared.emplace_back(key, setting_text(value_of(runs.front(), key)));

  std::vector<Group> groups;
  for (const RunSummary& r : runs) {
    std::string label;
    for (const auto& [key, d] : differs) {
      if (!d) continue;
      const nlohmann::json& v = value_of(r, key);
      label +=
          (label.empty() ? "" : ", ") + key + "=" + (&v == &kUnset ? "(unset)" : setting_text(v));
    }
    if (label.empty()) label = "all runs (same settings)";
    auto g = std::find_if(groups.begin(), groups.end(),
                          [&](const Group& x) { return x.label == label; });
    if (g == groups.end()) {
      groups.push_back({label, kSettingColours[groups.size() % kSettingColourCount], {}});
      g = groups.end() - 1;
    }
    g->runs.push_back(&r);
  }
  return groups;
}

// The mean and the min-max band of a group's step functions, over the x range that every one of
// them covers (outside it some runs have no value, and a mean of the others would jump).
struct Envelope {
  std::vector<double> x, mean, lo, hi;
};

Envelope envelope(const std::vector<const Curve*>& curves, bool log_x) {
  Envelope e;
  std::vector<Curve> drawable;
  for (const Curve* c : curves) {
    Curve d;
    for (auto [x, y] : *c)
      if (std::isfinite(x) && std::isfinite(y) && (!log_x || x > 0)) d.emplace_back(x, y);
    if (d.empty()) return e;
    drawable.push_back(std::move(d));
  }
  if (drawable.empty()) return e;
  double a = -INFINITY, b = INFINITY;
  for (const Curve& c : drawable) a = std::max(a, c.front().first), b = std::min(b, c.back().first);
  if (!(a <= b)) return e;
  std::vector<double> xs = {a, b};
  for (const Curve& c : drawable)
    for (auto [x, y] : c)
      if (x > a && x < b) xs.push_back(x);
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  for (double x : xs) {
    double sum = 0, lo = INFINITY, hi = -INFINITY;
    for (const Curve& c : drawable) {
      // The value held at x: that of the last point at or before it (x >= a >= c's first x).
      auto it = std::upper_bound(
          c.begin(), c.end(), x,
          [](double v, const std::pair<double, double>& p) { return v < p.first; });
      const double y = std::prev(it)->second;
      sum += y, lo = std::min(lo, y), hi = std::max(hi, y);
    }
    e.x.push_back(x), e.mean.push_back(sum / double(drawable.size()));
    e.lo.push_back(lo), e.hi.push_back(hi);
  }
  return e;
}

// The band between two step functions sharing the change points e.x: along the top forwards,
// back along the bottom.
std::string band_path(const Plot& p, const Envelope& e) {
  const std::size_t m = e.x.size();
  if (m < 2) return "";
  std::string d = "M" + px(p.x(e.x[0])) + " " + px(p.y(e.hi[0]));
  for (std::size_t i = 1; i < m; ++i) d += "H" + px(p.x(e.x[i])) + "V" + px(p.y(e.hi[i]));
  d += "V" + px(p.y(e.lo[m - 1]));
  for (std::size_t i = m - 1; i >= 1; --i)
    d += "V" + px(p.y(e.lo[i - 1])) + "H" + px(p.x(e.x[i - 1]));
  return d + "Z";
}

// Best validation accuracy so far of every run, against time (flops_axis false) or cumulative
// FLOPs: bands first, then the runs' thin lines, then the settings' means on top.
std::string compare_plot(const std::vector<Group>& groups, bool flops_axis, const TimeUnit& unit) {
  Plot p;
  p.id = flops_axis ? "fig-compare-flops" : "fig-compare-time";
  p.title = flops_axis ? "Best validation accuracy so far vs compute"
                       : "Best validation accuracy so far vs time";
  p.xlabel = flops_axis ? "cumulative FLOPs (training + validation, all individuals)"
                        : std::string("time since the run started (") + unit.name + ")";
  p.ylabel = "best validation accuracy (%)";
  auto curve_of = [&](const RunSummary& r) -> Curve {
    if (flops_axis) return r.by_flops;
    Curve c = r.by_time;
    for (auto& pt : c) pt.first /= unit.seconds;
    return c;
  };
  double xlo = flops_axis ? kNaN : 0, xhi = 0;
  std::vector<BestPoint> ys;  // only .best is read: best_y_range's input
  for (const Group& g : groups)
    for (const RunSummary* r : g.runs)
      for (auto [x, y] : curve_of(*r)) {
        if (!std::isfinite(x) || !std::isfinite(y) || (flops_axis && x <= 0)) continue;
        if (flops_axis && !(xlo <= x)) xlo = x;
        xhi = std::max(xhi, x);
        ys.push_back({0, 0, y, nullptr, false});
      }
  if (flops_axis) {
    p.xt = log_ticks(xlo, xhi);
    p.x = {xlo, xhi, true};
  } else {
    if (ys.empty()) xhi = 1;
    p.xt = linear_ticks(xlo, xhi, 6);
    p.x = {xlo, xhi, false};
  }
  best_y_range(ys, p);
  p.layout();

  std::ostringstream o;
  o << p.open();
  if (ys.empty()) {
    o << p.empty_note(flops_axis ? "no FLOP counts recorded" : "no individuals yet") << "</svg>\n";
    return o.str();
  }
  std::vector<Envelope> envs;
  for (const Group& g : groups) {
    std::vector<Curve> curves;
    for (const RunSummary* r : g.runs) curves.push_back(curve_of(*r));
    std::vector<const Curve*> ptrs;
    for (const Curve& c : curves) ptrs.push_back(&c);
    envs.push_back(envelope(ptrs, flops_axis));
  }
  o << "<g class=\"bands\" stroke=\"none\" fill-opacity=\"0.16\">\n";
  for (std::size_t gi = 0; gi < groups.size(); ++gi)
    if (groups[gi].runs.size() > 1)
      if (const std::string d = band_path(p, envs[gi]); !d.empty())
        o << "<path class=\"band\" d=\"" << d << "\" fill=\"" << groups[gi].colour << "\"><title>"
          << esc(groups[gi].label) << ": min to max of " << groups[gi].runs.size()
          << " runs</title></path>\n";
  o << "</g>\n<g class=\"run-lines\" fill=\"none\" stroke-width=\"1.1\" stroke-opacity=\"0.6\">\n";
  for (const Group& g : groups)
    for (const RunSummary* r : g.runs)
      if (const std::string d = step_path(p, curve_of(*r)); !d.empty())
        o << "<path class=\"run-line\" d=\"" << d << "\" stroke=\"" << g.colour << "\"><title>"
          << esc(r->src->name) << " (" << esc(g.label) << "): " << percent(r->best_val)
          << "</title></path>\n";
  o << "</g>\n<g class=\"mean-lines\" fill=\"none\" stroke-width=\"3\" "
       "stroke-linejoin=\"round\">\n";
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const Envelope& e = envs[gi];
    Curve mean;
    for (std::size_t i = 0; i < e.x.size(); ++i) mean.emplace_back(e.x[i], e.mean[i]);
    if (const std::string d = step_path(p, mean); !d.empty())
      o << "<path class=\"mean-line\" d=\"" << d << "\" stroke=\"" << groups[gi].colour
        << "\"><title>" << esc(groups[gi].label) << ": mean of " << groups[gi].runs.size() << " run"
        << (groups[gi].runs.size() == 1 ? "" : "s") << "</title></path>\n";
  }
  o << "</g>\n</svg>\n";
  return o.str();
}

// Mean, sample standard deviation (n - 1) and count of the finite values.
struct Stat {
  int n = 0;
  double mean = kNaN, sd = kNaN;
};

Stat stat_of(const std::vector<double>& values) {
  Stat s;
  double sum = 0;
  for (double v : values)
    if (std::isfinite(v)) sum += v, ++s.n;
  if (s.n == 0) return s;
  s.mean = sum / s.n;
  if (s.n >= 2) {
    double ss = 0;
    for (double v : values)
      if (std::isfinite(v)) ss += (v - s.mean) * (v - s.mean);
    s.sd = std::sqrt(ss / (s.n - 1));
  }
  return s;
}

enum class Shown { kPercent, kCount, kRate, kFlops };

std::string shown_text(double v, Shown how) {
  if (!std::isfinite(v)) return "&mdash;";
  switch (how) {
    case Shown::kPercent:
      return percent(v);
    case Shown::kCount:
      return strf("%.0f", v);
    case Shown::kRate:
      return strf("%.1f", v);
    case Shown::kFlops:
      return sci(v);
  }
  return "&mdash;";
}

// A table cell of a setting's statistic: "87.52% &plusmn; 0.31" (the sd in percentage points),
// with the exact numbers in data attributes, and "(k of n)" when some runs lack the value.
std::string stat_cell(const Stat& s, int runs, Shown how) {
  std::string o = "<td data-n=\"" + std::to_string(s.n) + "\"";
  if (std::isfinite(s.mean)) o += " data-mean=\"" + strf("%.10g", s.mean) + "\"";
  if (std::isfinite(s.sd)) o += " data-sd=\"" + strf("%.10g", s.sd) + "\"";
  o += ">" + shown_text(s.mean, how);
  if (std::isfinite(s.sd)) {
    o += " &plusmn; ";
    switch (how) {
      case Shown::kPercent:
        o += strf("%.2f", 100 * s.sd);
        break;
      case Shown::kFlops:
        o += sci(s.sd);
        break;
      default:
        o += shown_text(s.sd, how);
    }
  }
  if (s.n > 0 && s.n < runs) o += strf(" <small>(%d of %d)</small>", s.n, runs);
  return o + "</td>";
}

std::string value_cell(double v, Shown how) {
  return std::string("<td") + (std::isfinite(v) ? " data-value=\"" + strf("%.10g", v) + "\"" : "") +
         ">" + shown_text(v, how) + "</td>";
}

std::string swatch(const char* colour) {
  return std::string("<span class=\"swatch\" style=\"background:") + colour + "\"></span>";
}

std::string compare_table(const std::vector<Group>& groups) {
  std::ostringstream o;
  o << "<div class=\"table-wrap\"><table id=\"compare\">\n<thead><tr><th class=\"l\">setting / "
       "run</th><th>runs</th><th title=\"highest validation accuracy of any child\">best val "
       "acc</th><th title=\"the best individual's test accuracy (final.json)\">best's test "
       "acc</th><th title=\"the top-k ensemble's test accuracy (final.json)\">ensemble test "
       "acc</th><th>children</th><th title=\"births per hour between the first and the last "
       "birth\">children / hour</th><th title=\"training + validation, every individual\">total "
       "FLOPs</th></tr></thead>\n<tbody>\n";
  struct Column {
    double RunSummary::*field;
    Shown how;
  };
  const Column columns[] = {
      {&RunSummary::best_val, Shown::kPercent},       {&RunSummary::best_test, Shown::kPercent},
      {&RunSummary::ensemble_test, Shown::kPercent},  {&RunSummary::children, Shown::kCount},
      {&RunSummary::children_per_hour, Shown::kRate}, {&RunSummary::total_flops, Shown::kFlops}};
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const Group& g = groups[gi];
    const int n = int(g.runs.size());
    o << "<tr class=\"setting\" id=\"setting-" << gi << "\"><td class=\"l\">" << swatch(g.colour)
      << "<b class=\"label\">" << esc(g.label) << "</b></td><td class=\"n\">" << n << "</td>";
    for (const Column& c : columns) {
      std::vector<double> v;
      for (const RunSummary* r : g.runs) v.push_back(r->*c.field);
      o << stat_cell(stat_of(v), n, c.how);
    }
    o << "</tr>\n";
    for (const RunSummary* r : g.runs) {
      o << "<tr class=\"run\"><td class=\"l run-name\"><span class=\"mono\">" << esc(r->src->name)
        << "</span>" << (r->seed.empty() ? "" : " <small>seed " + esc(r->seed) + "</small>")
        << "</td><td></td>";
      for (const Column& c : columns) o << value_cell(r->*c.field, c.how);
      o << "</tr>\n";
    }
  }
  if (groups.empty()) o << "<tr><td colspan=\"8\" class=\"l\">no runs</td></tr>\n";
  o << "</tbody></table></div>\n";
  return o.str();
}

constexpr const char* kCompareStyle = R"(
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:7px;
  vertical-align:-1px}
.legend{display:flex;flex-wrap:wrap;gap:4px 22px;font-size:13px;margin:10px 0 0}
tr.setting td{border-top:1.5px solid #bbb;background:#fafafa}
tr.setting .label{font-weight:600;white-space:normal;overflow-wrap:anywhere}
td.run-name{padding-left:28px}
figure.plot-figure{width:540px}
)";

}  // namespace

std::string render_compare_report(const std::vector<CompareRun>& runs, const CompareOptions& opts) {
  std::vector<RunSummary> summaries;
  summaries.reserve(runs.size());  // groups point into it
  for (const CompareRun& r : runs) summaries.push_back(summarise_run(r));
  std::vector<std::pair<std::string, std::string>> shared;
  const std::vector<Group> groups =
      summaries.empty() ? std::vector<Group>{} : group_runs(summaries, shared);
  double span = 0;
  for (const RunSummary& r : summaries)
    if (!r.by_time.empty() && std::isfinite(r.by_time.back().first))
      span = std::max(span, r.by_time.back().first);
  const TimeUnit unit = pick_unit(span);
  const double generated =
      std::isfinite(opts.generated_at) ? opts.generated_at : double(std::time(nullptr));

  std::ostringstream o;
  o << page_head(opts.title, "evo comparison", std::string(kStyle) + kCompareStyle);
  o << "<h1>" << esc(opts.title) << "</h1>\n<div class=\"sub\">" << runs.size() << " run"
    << (runs.size() == 1 ? "" : "s") << " in " << groups.size() << " setting"
    << (groups.size() == 1 ? "" : "s") << " &#183; report generated " << utc_text(generated)
    << "</div>\n";
  if (!shared.empty()) {
    o << "<div class=\"sub settings\">shared by every run: ";
    for (std::size_t i = 0; i < shared.size(); ++i)
      o << (i ? " &#183; " : "") << esc(shared[i].first) << " <b>" << esc(shared[i].second)
        << "</b>";
    o << "</div>\n";
  }
  o << "<div class=\"legend\" id=\"legend\">\n";
  for (const Group& g : groups)
    o << "<span>" << swatch(g.colour) << esc(g.label) << " <small>(" << g.runs.size() << " run"
      << (g.runs.size() == 1 ? "" : "s") << ")</small></span>\n";
  o << "</div>\n";
  // Each figure as wide as its plot, so the two sit side by side and the captions wrap under them.
  o << "<div class=\"row\">\n<figure class=\"plot-figure\">\n"
    << compare_plot(groups, false, unit)
    << "<figcaption>Best validation accuracy among the children born so far, from the start of "
       "each run (its first child's birth minus that child's training time). Thin lines: runs; "
       "thick: each setting's mean where all its runs have data; shaded: their min to max."
       "</figcaption>\n</figure>\n<figure class=\"plot-figure\">\n"
    << compare_plot(groups, true, unit)
    << "<figcaption>The same against the compute each run has spent (log scale).</figcaption>\n"
       "</figure>\n</div>\n";
  o << "<h2>Settings compared</h2>\n"
    << "<p class=\"sub\">Per setting: mean &plusmn; sample standard deviation over its runs "
       "(for accuracies, in percentage points); one row per run below it.</p>\n"
    << compare_table(groups) << "</main>\n</body>\n</html>\n";
  return o.str();
}

ReportWritten write_compare_report(const std::vector<std::string>& run_dirs,
                                   const std::string& out_path) {
  if (run_dirs.empty()) throw Error("report: no run folders given; give one or more --run-dir's");
  ReportWritten written;
  written.path = out_path.empty() ? kDefaultComparePath : out_path;
  // Every folder checked before any is read: a typo in the last one fails at once.
  for (const std::string& dir : run_dirs) check_run_folder(dir);
  std::vector<CompareRun> runs;
  for (const std::string& dir : run_dirs) {
    const Population pop(dir);
    CompareRun r;
    r.name = dir;
    if (pop.settings().is_object()) r.settings = pop.settings();
    r.settings["population"] = pop.size();
    r.individuals = pop.all_individuals(&written.damaged);
    const FinalResults fin = read_final(dir);
    r.final_best_test = fin.best_test;
    r.final_ensemble_test = fin.ensemble_test;
    runs.push_back(std::move(r));
  }
  CompareOptions opts;
  opts.title = "evo study: " + std::to_string(runs.size()) + " runs";
  write_atomically(written.path, render_compare_report(runs, opts));
  return written;
}

}  // namespace evo
