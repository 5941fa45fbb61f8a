// evo status RUN: one screen on a live or finished run, read from its folder as any reader does
// (docs/population.md): how long it has run against its limit, children and children per hour
// now, the best so far and when it was found, the population's folders, who is training what on
// which host, and the final phase. --watch redraws it in place. Without RUN, evo doctor's page
// (doctor.cpp). Not the HTML report (evo report), and it changes nothing in the folder.
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include "evo/io.h"
#include "evo/population.h"
#include "evo/search.h"

namespace evo::cli {

namespace {

namespace fs = std::filesystem;

struct StatusArgs {
  std::string run_dir;
  bool watch = false;  // redraw every `every` seconds until Ctrl-C
  double every = 5;
};

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A JSON file of the run, or an empty object when it is missing or unreadable (status reports
// what it can; evo best and evo report name damaged files).
nlohmann::json json_or_empty(const std::string& path) {
  try {
    if (!fs::exists(path)) return nlohmann::json::object();
    nlohmann::json j = parse_json_limited(read_file_limited(path, 1 << 20, "run file"), path);
    return j.is_object() ? j : nlohmann::json::object();
  } catch (const std::exception&) {
    return nlohmann::json::object();
  }
}

nlohmann::json number_or_null(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json();
}

// Window over which "children per hour now" is counted: long enough to hold a few children of a
// bloated late search (~1 per minute per worker), short enough to show the fall.
constexpr double kRecentSeconds = 600;
// A run with no heartbeat for this long is idle (finished, stopped or dead).
constexpr double kIdleSeconds = 120;

nlohmann::json run_status_json(const std::string& run_dir) {
  const Population pop(run_dir);  // UsageError when it is not a run folder
  std::vector<std::string> damaged;
  const std::vector<IndividualRecord> all = pop.all_individuals(&damaged);
  const double now = unix_now();
  const nlohmann::json run = json_or_empty(run_dir + "/run.json");

  double first = INFINITY, last = -INFINITY;
  int failed = 0, recent = 0;
  const IndividualRecord* best = nullptr;
  for (const IndividualRecord& r : all) {
    if (!std::isfinite(r.birth_time)) continue;
    first = std::min(first, r.birth_time);
    last = std::max(last, r.birth_time);
    failed += r.failed;
    recent += now - r.birth_time <= kRecentSeconds;
    if (!r.failed && std::isfinite(r.fitness) && (!best || r.fitness > best->fitness)) best = &r;
  }
  const bool any = std::isfinite(first);
  const double span = any ? last - first : 0;

  nlohmann::json training = nlohmann::json::array();
  double freshest = -INFINITY;
  std::map<std::string, int> per_host;
  for (const Population::Training& t : pop.training()) {
    training.push_back({{"id", t.id},
                        {"host", t.host},
                        {"pid", t.pid},
                        {"seconds", number_or_null(now - t.since)},
                        {"heartbeat_age", number_or_null(now - t.heartbeat)}});
    if (std::isfinite(t.heartbeat)) freshest = std::max(freshest, t.heartbeat);
    ++per_host[t.host.empty() ? "?" : t.host];
  }
  const Population::Census c = pop.census();

  nlohmann::json final_phase = {{"state", "none"}};
  const nlohmann::json owner = json_or_empty(run_dir + "/final.claim/owner.json");
  const nlohmann::json done = json_or_empty(run_dir + "/final.claim/done.json");
  if (!owner.empty()) {
    final_phase["state"] = done.empty() ? "training" : "done";
    // The holder's heartbeat: the claim folder's mtime, touched at every training check.
    struct stat st {};
    if (done.empty() && ::stat((run_dir + "/final.claim").c_str(), &st) == 0)
      freshest = std::max(freshest, double(st.st_mtim.tv_sec) + 1e-9 * double(st.st_mtim.tv_nsec));
    final_phase["holder"] =
        owner.value("host", std::string("?")) + " pid " + std::to_string(owner.value("pid", 0));
  }
  const nlohmann::json fin = json_or_empty(run_dir + "/final.json");
  if (fin.contains("answer") && fin["answer"].is_string()) {
    final_phase["answer"] = fin["answer"];
    if (fin.contains("answer_test_accuracy")) final_phase["answer_test_accuracy"] =
        fin["answer_test_accuracy"];
  }

  // Live: some worker's heartbeat (a child in training, or the final phase's claim) is recent. A
  // finished run holds no child in training, so it reads as idle since its last birth.
  const bool live = now - freshest <= kIdleSeconds;
  const double quiet = now - std::max(freshest, any ? last : -INFINITY);
  const nlohmann::json created_with =
      run.contains("created_with") && run["created_with"].is_object() ? run["created_with"]
                                                                      : nlohmann::json::object();
  const double limit = created_with.value("time_limit", 0.0);
  return {{"run", run_dir},
          {"created", number_or_null(run.value("created", NAN))},
          {"time_limit", limit > 0 ? nlohmann::json(limit) : nlohmann::json()},
          {"live", live},
          {"quiet_seconds", number_or_null(quiet)},
          // A live run's age now; an idle one's from its first birth to its last sign of life.
          {"elapsed", any ? nlohmann::json((live ? now : now - quiet) - first) : nlohmann::json()},
          {"individuals", int(all.size())},
          {"failed", failed},
          {"children_per_hour", span > 0 ? nlohmann::json(3600.0 * double(all.size()) / span)
                                         : nlohmann::json()},
          {"children_per_hour_recent", 3600.0 * recent / kRecentSeconds},
          {"best_id", best ? best->id : ""},
          {"best_val_accuracy", best ? nlohmann::json(best->fitness) : nlohmann::json()},
          {"best_at", best ? nlohmann::json(best->birth_time - first) : nlohmann::json()},
          {"alive", c.alive},
          {"dead", c.dead},
          {"free", c.free},
          {"training", training},
          {"training_per_host", per_host},
          {"final", final_phase},
          {"damaged_records", damaged}};
}

void print_status(const nlohmann::json& s) {
  auto num = [&](const char* key) {
    return s.contains(key) && s[key].is_number() ? s[key].get<double>() : NAN;
  };
  const double limit = num("time_limit"), elapsed = num("elapsed");
  const double quiet = num("quiet_seconds");
  std::printf("run         %s (%s)\n", s["run"].get<std::string>().c_str(),
              s["live"].get<bool>()    ? "live"
              : std::isfinite(quiet)   ? ("idle for " + format_duration(quiet)).c_str()
                                       : "idle: nothing trained yet");
  if (std::isfinite(elapsed))
    std::printf("elapsed     %s %s%s\n", format_duration(elapsed).c_str(),
                s["live"].get<bool>() ? "since the first birth"
                                      : "from the first birth to the last sign of life",
                std::isfinite(limit)
                    ? (" (time limit " + format_duration(limit) + " when it was created)").c_str()
                    : "");
  std::printf("children    %d (%d failed); %.0f per hour over the last %.0f minutes, %s overall\n",
              s["individuals"].get<int>(), s["failed"].get<int>(),
              num("children_per_hour_recent"), kRecentSeconds / 60,
              std::isfinite(num("children_per_hour"))
                  ? (std::to_string(std::lround(num("children_per_hour"))) + " per hour").c_str()
                  : "—");
  if (std::isfinite(num("best_val_accuracy")))
    std::printf("best        %.2f%% validation: %s, born %s after the first\n",
                100 * num("best_val_accuracy"), s["best_id"].get<std::string>().c_str(),
                format_duration(num("best_at")).c_str());
  std::printf("population  %d alive, %d dead, %d free; %zu training now\n",
              s["alive"].get<int>(), s["dead"].get<int>(), s["free"].get<int>(),
              s["training"].size());
  for (const auto& [host, n] : s["training_per_host"].items())
    std::printf("  on %-8s %d child%s\n", host.c_str(), n.get<int>(),
                n.get<int>() == 1 ? "" : "ren");
  const nlohmann::json& f = s["final"];
  const std::string state = f["state"];
  std::printf("final phase %s", state == "none"       ? "not started"
                                : state == "training" ? "being trained by "
                                                      : "done, by ");
  if (f.contains("holder")) std::printf("%s", f["holder"].get<std::string>().c_str());
  if (f.contains("answer") && f.contains("answer_test_accuracy") &&
      f["answer_test_accuracy"].is_number())
    std::printf("; answer: the %s, %.2f%% test", f["answer"].get<std::string>().c_str(),
                100 * f["answer_test_accuracy"].get<double>());
  std::printf("\n");
  if (!s["damaged_records"].empty())
    std::printf("damaged     %zu records left out (evo report names them)\n",
                s["damaged_records"].size());
}

int run_status_command(const StatusArgs& a, bool json) {
  if (a.run_dir.empty()) {
    if (!json)
      std::printf("(this build's devices and data: evo doctor; evo status RUN summarises a "
                  "run)\n\n");
    return run_doctor(json);
  }
  for (;;) {
    const nlohmann::json s = run_status_json(a.run_dir);
    if (a.watch && !json) std::printf("\033[H\033[2J");  // home, clear: redraw in place
    if (json)
      print_json(s);
    else
      print_status(s);
    if (!a.watch) return 0;
    if (!json)
      std::printf("\n(every %g s; Ctrl-C ends the watch, not the run)\n", a.every);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::duration<double>(a.every));
  }
}

}  // namespace

Command add_status_command(CLI::App& app, const Globals& globals) {
  const auto a = std::make_shared<StatusArgs>();
  CLI::App* status = app.add_subcommand(
      "status", "One screen on a live or finished run (without RUN: evo doctor's page)");
  status->add_option("run_dir", a->run_dir, "Run folder");
  status->add_flag("--watch", a->watch,
                   "Redraw in place until Ctrl-C (which ends the watch, not the run); with "
                   "--json, one object per line");
  status->add_option("--every", a->every, "Seconds between --watch redraws, 0.5-3600")
      ->check(CLI::Range(0.5, 3600.0))
      ->capture_default_str();
  return {status, [a, &globals] { return run_status_command(*a, globals.json); }};
}

}  // namespace evo::cli
