// Tests of the evo command line as a user meets it: help, exit codes, errors for bad options.
// Not tests of what the subcommands compute.
#include <array>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <thread>

#include "evo/device.h"
#include "evo/dna.h"
#include "evo/mutation.h"
#include "support.h"

#include <nlohmann/json.hpp>

namespace {

using evo::test::Run;
using evo::test::run_evo;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

}  // namespace

TEST_CASE("evo --help lists every subcommand of the spec", "[cli]") {
  const Run r = run_evo("--help");
  CHECK(r.code == 0);
  for (const char* sub :
       {"search", "train", "retrain", "eval", "show", "mutate", "report", "--gpus"})
    CHECK(r.output.find(sub) != std::string::npos);
}

TEST_CASE("Unknown options and bad values are usage errors with exit code 2", "[cli]") {
  Run r = run_evo("--no-such-option");
  CHECK(r.code == 2);
  CHECK(r.output.find("no-such-option") != std::string::npos);
  r = run_evo("search --selection best");
  CHECK(r.code == 2);
  r = run_evo("train");  // --dna is required
  CHECK(r.code == 2);
  CHECK(r.output.find("--dna") != std::string::npos);
  r = run_evo("--gpus 0-x");
  CHECK(r.code == 2);
  CHECK(r.output.find("not a GPU index or range") != std::string::npos);
  // A search option given to another subcommand is an error, not silently ignored.
  r = run_evo("train --dna " EVO_SOURCE_DIR "/data/dna/initial.json --population 5 --steps 1");
  CHECK(r.code == 2);
  CHECK(r.output.find("--population is not an option of evo train") != std::string::npos);
  r = run_evo("show " EVO_SOURCE_DIR "/data/dna/initial.json --time-limit 5m");
  CHECK(r.code == 2);
  CHECK(r.output.find("--time-limit is not an option of evo show") != std::string::npos);
}

// README's table of exit codes, per subcommand: 2 when the command line is wrong (an unknown
// option, a path that is not a run folder), 1 when a file it names is wrong (a DNA that does not
// parse) or the work fails.
TEST_CASE("Exit codes: every subcommand follows README's table", "[cli]") {
  const std::string dir = evo::test::temp_dir("cli-exit");
  const std::string bad = dir + "/bad.json";
  { std::ofstream(bad) << "{\"vertices\": ["; }
  const std::string nowhere = dir + "/no-run";
  for (const char* sub : {"search", "train", "retrain", "eval", "show", "mutate", "report",
                          "best", "export", "status", "doctor"}) {
    const Run r = run_evo(std::string(sub) + " --no-such-option");
    INFO("evo " << sub << ": " << r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find("--help") != std::string::npos);  // CLI11's pointer to the options
  }
  for (const char* sub : {"retrain", "report", "best", "export", "status"}) {
    const Run r = run_evo(std::string(sub) + " " + nowhere);
    INFO("evo " << sub << " on a missing folder: " << r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find(nowhere) != std::string::npos);
  }
  for (const std::string& cmd :
       {"show " + bad, "mutate " + bad + " --mutation identity", "train --dna " + bad + " --steps 1",
        "eval --dna " + bad + " --weights " + bad, "export " + bad + " --weights " + bad}) {
    const Run r = run_evo(cmd);
    INFO("evo " << cmd << ": " << r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find(bad) != std::string::npos);  // the message names the file
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("Asking for a GPU that is not there is a clear error with exit code 2", "[cli]") {
  const evo::GpuInventory inv = evo::discover_gpus();
  const Run r = run_evo("--gpus " + std::to_string(inv.count));
  CHECK(r.code == 2);
  CHECK(r.output.find("GPU " + std::to_string(inv.count) + " is not there") != std::string::npos);
  CHECK(r.output.find("--gpus none") != std::string::npos);
}

TEST_CASE("evo doctor (and evo status without a run) reports the devices and the data", "[cli]") {
  for (const char* cmd : {"doctor", "status"}) {
    Run r = run_evo(cmd);
    INFO(cmd << ": " << r.output);
    CHECK(r.code == 0);
    CHECK(r.output.find("cpu      ready") != std::string::npos);
    CHECK(r.output.find("emu      ready") != std::string::npos);
    r = run_evo(std::string(cmd) + " --json");
    CHECK(r.code == 0);
    CHECK(r.output.find("\"backends\"") != std::string::npos);
  }
}

TEST_CASE("evo show prints a DNA's layers, and bad DNA files are clear errors", "[cli]") {
  Run r = run_evo("show " EVO_SOURCE_DIR "/data/dna/four_conv.json");
  CHECK(r.code == 0);
  CHECK(r.output.find("131,178") != std::string::npos);  // parameters, as data/dna/README.md says
  r = run_evo("show " EVO_SOURCE_DIR "/data/dna/four_conv.json --dot");
  CHECK(r.code == 0);
  CHECK(r.output.find("digraph") != std::string::npos);
  r = run_evo("show /nonexistent/dna.json");
  CHECK(r.code == 1);
  CHECK(r.output.find("/nonexistent/dna.json") != std::string::npos);
  r = run_evo("search --time-limit 3x --gpus none");
  CHECK(r.code == 2);
}

// The child's DNA on stdout (so `evo mutate A > B` writes a loadable DNA), what changed on
// stderr; --json puts both in one object; an unknown name is a usage error listing the names.
TEST_CASE("evo mutate prints the child of apply_mutation for the seed", "[cli]") {
  const std::string dir = evo::test::temp_dir("cli-mutate");
  const std::string file = EVO_SOURCE_DIR "/data/dna/skips.json";
  const uint64_t seed = evo::test::rng()();
  std::mt19937_64 rng(seed);
  const evo::MutationResult expect =
      evo::apply_mutation(evo::load_dna(file), evo::Mutation::AddSkip, rng);
  const std::string args = "mutate " + file + " --mutation add-skip --seed " + std::to_string(seed);
  Run r = run_evo(args, "2>" + dir + "/stderr");
  CHECK(r.code == 0);
  CHECK(r.output == evo::to_json(expect.child));
  CHECK(read_file(dir + "/stderr") == "add-skip: " + expect.detail + "\n");
  r = run_evo(args + " --json", "2>" + dir + "/stderr");
  CHECK(r.code == 0);
  const nlohmann::json j = nlohmann::json::parse(r.output);
  CHECK(j["mutation"] == "add-skip");
  CHECK(j["detail"] == expect.detail);
  CHECK(j["reset_weights"] == false);
  CHECK(evo::dna_from_json(j["child"]) == expect.child);
  CHECK(read_file(dir + "/stderr").empty());

  r = run_evo("mutate " + file + " --mutation no-such-mutation");
  CHECK(r.code == 2);
  CHECK(r.output.find("unknown mutation \"no-such-mutation\"; the mutations are "
                      "alter-learning-rate, ") != std::string::npos);
  CHECK(r.output.find(", or random (the paper's uniform choice)") != std::string::npos);
  r = run_evo("mutate " EVO_SOURCE_DIR "/data/dna/initial.json --mutation remove-convolution");
  CHECK(r.code == 1);
  CHECK(r.output.find("initial.json") != std::string::npos);
  CHECK(r.output.find("no convolution") != std::string::npos);
  std::filesystem::remove_all(dir);
}

// Values that used to be accepted silently (or abort, or let libgomp end the process): each is a
// usage error (exit 2) naming the option, and nothing is created on disk before the check.
TEST_CASE("Out-of-range and malformed option values exit 2 before anything is created", "[cli]") {
  const std::string dir = evo::test::temp_dir("cli-values");
  const std::string run = dir + "/run";
  const std::pair<const char*, const char*> cases[] = {
      {"--time-limit nan", "--time-limit"},    {"--time-limit inf", "--time-limit"},
      {"--time-limit 0x10", "--time-limit"},   {"--time-limit=", "--time-limit"},
      {"--time-limit 1e3", "--time-limit"},    {"--time-limit -5m", "--time-limit"},
      {"--time-limit 400d", "at most a year"}, {"--time-limit 45", "45s, 45m or 45h"},
      {"--time-limit 1h30", "1h30s, 1h30m"},   {"--population 0", "--population"},
      {"--population -5", "--population"},     {"--population 1", "--population"},
      {"--steps 0", "--steps"},                {"--steps -1", "--steps"},
      {"--seed -1", "--seed"},                 {"--workers 0", "--workers"},
      {"--workers -3", "--workers"},           {"--workers 100000", "--workers"},
      {"--threads 100000", "--threads"},       {"--sample-size 1", "--sample-size"},
      {"--max-train 0", "--max-train"},        {"--max-train 1", "fewer than one batch"},
      {"--data imagenet", "imagenet"},
  };
  for (const auto& [args, says] : cases) {
    const Run r = run_evo("search --gpus none --run-dir " + run + " " + args);
    INFO("evo search " << args << "\n" << r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find(says) != std::string::npos);
    CHECK(!std::filesystem::exists(run));  // no run.json a corrected command would meet
  }
  Run r = run_evo("best " + run + " --ensemble 0");  // was taken as 1 without a word
  CHECK(r.code == 2);
  CHECK(r.output.find("--ensemble") != std::string::npos);
  r = run_evo("train --dna " EVO_SOURCE_DIR "/data/dna/initial.json --batch 0");
  CHECK(r.code == 2);
  r = run_evo("train --dna " EVO_SOURCE_DIR "/data/dna/initial.json --steps 0");
  CHECK(r.code == 2);
  r = run_evo("show " EVO_SOURCE_DIR "/data/dna/initial.json --classes 0");
  CHECK(r.code == 2);
  // --out naming a file: refused before training starts (the message names it, exit 2).
  const std::string file = dir + "/a-file";
  { std::ofstream(file) << "x"; }
  r = run_evo("train --dna " EVO_SOURCE_DIR "/data/dna/initial.json --steps 100000 --out " + file);
  CHECK(r.code == 2);
  CHECK(r.output.find(file) != std::string::npos);
  CHECK(r.output.find("step") == std::string::npos);  // no training progress was printed
  // Durations that are fine get past the option check (to the data set's error).
  for (const char* ok : {"90s", "1h30m", "1.5h", "45s", "0", "none"}) {
    r = run_evo("search --gpus none --data imagenet --run-dir " + run + " --time-limit " + ok);
    INFO(ok << ": " << r.output);
    CHECK(r.output.find("imagenet") != std::string::npos);
    CHECK(r.output.find("--time-limit") == std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

// A run resumes with a bare `evo search --run-dir RUN` (its settings come from run.json); an
// explicit conflicting value is refused naming both; `evo best` uses the run's data set and seed,
// prints JSON with --json, and says when the best's test accuracy could not be measured.
TEST_CASE("resume takes run.json's settings; evo best reads the run's own data", "[cli]") {
  if (!evo::test::have_fashion_mnist()) {
    if (std::getenv("CI")) FAIL("Fashion-MNIST is missing in CI (tools/setup.sh installs it)");
    return;
  }
  const std::string dir = evo::test::temp_dir("cli-resume");
  const std::string run = dir + "/run";
  const std::string small = " --max-train 500 --max-val 200 --steps 10 --workers 1 --threads 1";
  Run r = run_evo("search --gpus none --run-dir " + run + " --seed 7 --population 3 "
                  "--inheritance paper --max-children 4 --json" + small);
  INFO(r.output);
  REQUIRE(r.code == 0);
  r = run_evo("search --gpus none --run-dir " + run + " --max-children 2 --json" + small);
  INFO(r.output);
  CHECK(r.code == 0);
  CHECK(r.output.find("\"children\":2") != std::string::npos);
  r = run_evo("search --gpus none --run-dir " + run + " --seed 8 --max-children 1" + small);
  CHECK(r.code == 2);
  CHECK(r.output.find("seed = 7 (run.json), not 8") != std::string::npos);
  r = run_evo("search --gpus none --run-dir " + run + " --inheritance keep --max-children 1" +
              small);
  CHECK(r.code == 2);
  CHECK(r.output.find("inheritance") != std::string::npos);

  r = run_evo("best " + run + " --json");
  CHECK(r.code == 0);
  const auto brace = r.output.find('{');
  REQUIRE(brace != std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(r.output.substr(brace));
  CHECK(j["best_test_accuracy"].is_number());
  CHECK(j["children"] == 0);      // evo best trains none
  CHECK(j["individuals"] == 6);   // the run's: 4, then 2 more on resuming
  CHECK(j["individuals_failed"].get<int>() <= 6);
  r = run_evo("best " + run + " --data mnist:" + dir);
  CHECK(r.code == 2);
  CHECK(r.output.find("leave out --data") != std::string::npos);

  // evo status: the same run from its folder, without training or measuring anything.
  r = run_evo("status " + run + " --json");
  REQUIRE(r.code == 0);
  {
    const nlohmann::json st = nlohmann::json::parse(r.output.substr(r.output.find('{')));
    CHECK(st["individuals"] == 6);
    CHECK(st["best_id"] == j["best_id"]);
    CHECK(st["best_val_accuracy"] == j["best_val_accuracy"]);
    CHECK(st["alive"] == 3);
    CHECK(st["training"].empty());
    CHECK(st["live"] == false);  // finished: no child in training
    CHECK(st["final"]["state"] == "none");
    // Recorded when the run was created, never compared: the limit (none given: 30m on the CPU).
    CHECK(st["time_limit"] == 1800);
  }
  r = run_evo("status " + run);
  CHECK(r.code == 0);
  CHECK(r.output.find("children    6 (") != std::string::npos);
  CHECK(r.output.find("population  3 alive") != std::string::npos);

  // The best's weights damaged: not "0.00%", but why it was not measured.
  const std::string best_id = j["best_id"];
  std::ofstream(run + "/alive/" + best_id + "/weights.evow", std::ios::trunc) << "junk";
  r = run_evo("best " + run);
  CHECK(r.code == 0);
  CHECK(r.output.find("test accuracy not measured") != std::string::npos);
  CHECK(r.output.find("weights.evow") != std::string::npos);

  // Without --json, the lines a search prints as it runs (src/cli/search.cpp), then its summary.
  r = run_evo("search --gpus none --run-dir " + run + " --max-children 1" + small, "2>/dev/null");
  INFO(r.output);
  CHECK(r.code == 0);
  CHECK(r.output.rfind("evo search: fashion-mnist (500 train / 200 val images), population 3, "
                       "10 steps per child (no crops or flips), 1 worker, tournament selection, "
                       "paper inheritance, run folder " + run + "\n", 0) == 0);
  CHECK(r.output.find("\nresuming a population of 3 individuals (best so far ") !=
        std::string::npos);
  CHECK(r.output.find(" params  val ") != std::string::npos);
  CHECK(r.output.find("\nsearch finished after ") != std::string::npos);
  CHECK(r.output.find("\nreport            " + run + "/report.html\n") != std::string::npos);

  // A run.json written before --inheritance existed has no such key: its children were made by
  // the paper's rule, and a resumed run goes on with it (not with the CPU default, keep).
  {
    const std::string old_run = dir + "/old-run";
    r = run_evo("search --gpus none --run-dir " + old_run + " --seed 7 --population 3 "
                "--max-children 1 --json" + small);
    REQUIRE(r.code == 0);
    nlohmann::json rj = nlohmann::json::parse(read_file(old_run + "/run.json"));
    REQUIRE(rj["settings"]["inheritance"] == "keep");
    REQUIRE(rj["settings"]["lr_schedule"] == "cosine");  // the CPU defaults beyond the paper
    REQUIRE(rj["settings"]["fit_filters"] == true);
    REQUIRE(rj["settings"]["final_share"] == 0.5);  // of the default 30 minutes
    // Nor the keys of the rules that came later: a run that predates them goes on by the paper's.
    for (const char* key : {"inheritance", "lr_schedule", "fit_filters", "cost_tie_points",
                            "final_share", "final_top", "final_width", "final_augment"})
      rj["settings"].erase(key);
    std::ofstream(old_run + "/run.json", std::ios::trunc) << rj.dump();
    r = run_evo("search --gpus none --run-dir " + old_run + " --max-children 1" + small,
                "2>/dev/null");
    INFO(r.output);
    CHECK(r.code == 0);
    CHECK(r.output.find("paper inheritance, run folder " + old_run + "\n") != std::string::npos);
    CHECK(r.output.find("\nlearning rate constant over each child, filters of any size, cost "
                        "ties none, final phase none\n") != std::string::npos);
  }
  // A final phase takes a share of a time limit: without one it is a usage error, not ignored.
  r = run_evo("search --gpus none --run-dir " + dir + "/no-limit --time-limit none "
              "--final-share 0.4" + small);
  CHECK(r.code == 2);
  CHECK(r.output.find("--final-share 0.4 needs a --time-limit") != std::string::npos);
  CHECK(!std::filesystem::exists(dir + "/no-limit"));

  // evo report prints the page's path; a record it cannot read is named on stderr, not fatal.
  r = run_evo("report " + run);
  CHECK(r.code == 0);
  CHECK(r.output == run + "/report.html\n");
  std::string damaged;
  for (const auto& e : std::filesystem::directory_iterator(run + "/dead"))
    damaged = (e.path() / "metrics.json").string();
  REQUIRE(!damaged.empty());
  std::ofstream(damaged, std::ios::trunc) << "{";
  r = run_evo("report " + run + " --out " + dir + "/page.html");
  CHECK(r.code == 0);
  CHECK(r.output.find("evo report: left out a damaged record: " + damaged) != std::string::npos);
  CHECK(r.output.find(dir + "/page.html\n") != std::string::npos);
  r = run_evo("report " + run + " " + run + " --out " + dir + "/compare.html");
  CHECK(r.code == 0);
  CHECK(r.output.find("evo report: left out a damaged record: " + damaged) != std::string::npos);
  CHECK(r.output.find(dir + "/compare.html\n") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("evo retrain trains a run's top individuals further; evo train --gpus on emulated GPUs",
          "[cli]") {
  if (!evo::test::have_fashion_mnist()) {
    if (std::getenv("CI")) FAIL("Fashion-MNIST is missing in CI (tools/setup.sh installs it)");
    return;
  }
  const std::string dir = evo::test::temp_dir("cli-retrain");
  const std::string run = dir + "/run";
  const std::string small = " --max-train 500 --max-val 200 --steps 10 --workers 1 --threads 1";
  Run r = run_evo("search --gpus none --run-dir " + run + " --seed 3 --population 3 "
                  "--max-children 3 --json" + small);
  INFO(r.output);
  REQUIRE(r.code == 0);

  r = run_evo("retrain " + run + " --top 2 --steps 40 --batch 25 --threads 1 --json",
              "2>/dev/null");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const nlohmann::json j = nlohmann::json::parse(r.output);
  REQUIRE(j["individuals"].size() == 2);
  CHECK(j["ensemble_size"] == 2);
  CHECK(j["ensemble_test"].is_number());
  const nlohmann::json saved = nlohmann::json::parse(read_file(run + "/final/retrain.json"));
  CHECK(saved == j);
  for (const nlohmann::json& ind : j["individuals"]) {
    INFO(ind.dump());
    CHECK(ind["steps"] == 40);
    CHECK(ind["test_before"].is_number());
    // Ten validation checks; --keep best keeps the best of them and of the search's weights.
    REQUIRE(ind["val_curve"].size() == 10);
    double best = ind["val_before"].get<double>();
    int best_step = 0;
    for (const auto& point : ind["val_curve"])
      if (point[1].get<double>() > best) {
        best = point[1].get<double>();
        best_step = point[0].get<int>();
      }
    CHECK(ind["val_after"].get<double>() == best);
    CHECK(ind["kept_step"] == best_step);
    const std::string folder = run + "/final/" + ind["folder"].get<std::string>();
    // The saved weights, evaluated by evo eval on the run's data (its seed and training cap
    // choose the standardisation): the test accuracy retrain reported.
    Run e = run_evo("eval --dna " + folder + "/dna.json --weights " + folder +
                    "/weights.evow --split test --seed 3 --max-train 500 --json");
    REQUIRE(e.code == 0);
    CHECK(nlohmann::json::parse(e.output)["accuracy"].get<double>() ==
          ind["test_after"].get<double>());
    CHECK(nlohmann::json::parse(read_file(folder + "/metrics.json"))["test_after"] ==
          ind["test_after"]);
  }
  // A second retrain would replace the first: refused (exit 2, the file untouched) without
  // --force.
  r = run_evo("retrain " + run + " --top 1 --steps 5 --threads 1");
  CHECK(r.code == 2);
  CHECK(r.output.find("--force") != std::string::npos);
  CHECK(nlohmann::json::parse(read_file(run + "/final/retrain.json")) == j);
  // evo report shows them.
  r = run_evo("report " + run);
  REQUIRE(r.code == 0);
  const std::string page = read_file(run + "/report.html");
  CHECK(page.find("Retrained (evo retrain)") != std::string::npos);
  CHECK(page.find(j["individuals"][0]["id"].get<std::string>()) != std::string::npos);

  // Not a run: a usage error, nothing created.
  r = run_evo("retrain " + dir + "/no-run");
  CHECK(r.code == 2);
  CHECK_FALSE(std::filesystem::exists(dir + "/no-run"));

  // Data-parallel training on two emulated GPUs, end to end (the trainer's own tests are in
  // test_train); --gpus with a CPU device is a usage error.
  const std::string dna = std::string(EVO_SOURCE_DIR) + "/data/dna/initial.json";
  r = run_evo("train --dna " + dna + " --device emu --gpus 0-1 --steps 4 --batch 10 "
              "--max-train 500 --augment off --json",
              "2>/dev/null");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const nlohmann::json t = nlohmann::json::parse(r.output);
  CHECK(t["device"] == "emu,emu:1 (data-parallel)");
  CHECK(t["steps"] == 4);
  CHECK(t["learning_rate"].get<double>() == Approx(t["dna_learning_rate"].get<double>() * 10 / 50));
  r = run_evo("train --dna " + dna + " --device cpu --gpus 0-1 --steps 4");
  CHECK(r.code == 2);
  CHECK(r.output.find("--gpus 0-1 with --device cpu") != std::string::npos);
  std::filesystem::remove_all(dir);
}

// evo train --out never writes through a link planted in the output folder: the result replaces
// the link, and the file it pointed to is untouched.
TEST_CASE("evo train --out replaces planted links instead of following them", "[cli]") {
  if (!evo::test::have_fashion_mnist()) {
    if (std::getenv("CI")) FAIL("Fashion-MNIST is missing in CI (tools/setup.sh installs it)");
    return;
  }
  const std::string dir = evo::test::temp_dir("cli-links");
  const std::string out = dir + "/out", victim = dir + "/victim";
  std::filesystem::create_directories(out);
  { std::ofstream(victim) << "precious"; }
  for (const char* name : {"metrics.json", "metrics.json.tmp", "weights.evow", "dna.json"})
    std::filesystem::create_symlink(victim, out + "/" + name);
  const Run r = run_evo("train --dna " EVO_SOURCE_DIR "/data/dna/initial.json --steps 5 "
                        "--max-train 200 --out " + out);
  INFO(r.output);
  CHECK(r.code == 0);
  std::ifstream in(victim);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  CHECK(text == "precious");
  for (const char* name : {"metrics.json", "weights.evow", "dna.json"}) {
    CHECK(std::filesystem::is_regular_file(std::filesystem::symlink_status(out + "/" + name)));
  }
  std::filesystem::remove_all(dir);
}

namespace {

// Starts `evo ARGS` with EVO_HOST=host in the background (stdout and stderr to `log`).
pid_t spawn_evo(const std::string& host, const std::string& args, const std::string& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("EVO_HOST", host.c_str(), 1);
    const std::string cmd = "exec " + std::string(EVO_BINARY) + " " + args + " > " + log + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// The staging children whose owner.json names `host`.
std::vector<std::string> children_of(const std::string& run, const std::string& host) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(run + "/staging", ec)) {
    std::ifstream in(e.path() / "owner.json");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    if (text.find("\"" + host + "\"") != std::string::npos) out.push_back(e.path().string());
  }
  return out;
}

}  // namespace

// Many machines on one folder (the Slurm recipe): processes that say they are hosts A and B (EVO_HOST)
// share a run; A is killed -9 mid-child; B, which cannot check A's pid, reclaims A's child and its
// slot once A's heartbeat is --stale-after old, while B is running.
TEST_CASE("a host that dies is reclaimed by the others by heartbeat", "[cli]") {
  if (!evo::test::have_fashion_mnist()) {
    if (std::getenv("CI")) FAIL("Fashion-MNIST is missing in CI (tools/setup.sh installs it)");
    return;
  }
  const std::string dir = evo::test::temp_dir("cli-hosts");
  const std::string run = dir + "/run";
  const std::string common = "search --gpus none --run-dir " + run +
                             " --population 3 --max-train 1000 --max-val 200 --workers 1 "
                             "--threads 1 --stale-after 3s --seed 3 --inheritance paper "
                             "--steps 40000";
  // Slow children (40,000 steps: seconds each), so A is surely inside one when it dies.
  const pid_t a = spawn_evo("hostA", common + " --time-limit 120s", dir + "/a.log");
  std::vector<std::string> held;
  for (int i = 0; i < 600 && held.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (const std::string& c : children_of(run, "hostA"))
      if (std::filesystem::exists(c + "/slot.json")) held.push_back(c);
  }
  ::kill(a, SIGKILL);
  ::waitpid(a, nullptr, 0);
  REQUIRE(held.size() == 1);
  REQUIRE(std::filesystem::exists(held[0]));  // killed inside the child, holding its slot
  // B, another host: A's pid means nothing to it, only the heartbeat does. (A bare resume: the
  // run's settings come from run.json.)
  const Run b = run_evo("search --gpus none --run-dir " + run +
                        " --max-train 1000 --max-val 200 --workers 1 --threads 1 --stale-after 3s "
                        "--time-limit 12s");
  INFO(b.output);
  CHECK(b.code == 0);
  CHECK(!std::filesystem::exists(held[0]));  // A's child is gone, its slot back in use
  CHECK(children_of(run, "hostA").empty());
  std::filesystem::remove_all(dir);
}

// tools/slurm/evo.sbatch outside Slurm (its #SBATCH lines are comments to bash): two array tasks
// of one run at once, each a "node" of its own; both train children into the one population.
TEST_CASE("tools/slurm/evo.sbatch runs array tasks on one population", "[cli]") {
  if (!evo::test::have_fashion_mnist()) {
    if (std::getenv("CI")) FAIL("Fashion-MNIST is missing in CI (tools/setup.sh installs it)");
    return;
  }
  const std::string dir = evo::test::temp_dir("cli-slurm");
  const std::string run = dir + "/run";
  std::string tasks;
  for (int i = 0; i < 2; ++i)
    tasks += "env EVO_RUN_DIR=" + run + " EVO=" EVO_BINARY " EVO_DATA=fashion-mnist EVO_GPUS=none "
             "SLURMD_NODENAME=node SLURM_ARRAY_TASK_ID=" + std::to_string(i) +
             " EVO_ARGS='--population 3 --max-train 500 --max-val 200 --steps 10 --workers 1 "
             "--threads 1 --max-children 4 --seed 5' bash " EVO_SOURCE_DIR
             "/tools/slurm/evo.sbatch > " + dir + "/task" + std::to_string(i) + ".log 2>&1 & ";
  const int status = std::system(("(" + tasks + "wait)").c_str());
  CHECK(status == 0);
  std::map<std::string, int> by_host;
  for (const char* where : {"/alive", "/dead"}) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(run + where, ec)) {
      std::ifstream in(e.path() / "metrics.json");
      const nlohmann::json j = nlohmann::json::parse(in);
      ++by_host[j.value("host", std::string())];
    }
  }
  CHECK(by_host["node-task0"] == 4);
  CHECK(by_host["node-task1"] == 4);
  std::filesystem::remove_all(dir);
}
