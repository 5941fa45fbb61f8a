// End-to-end test of the search on a Fashion-MNIST subset on the CPU: the population evolves past
// its trivial start, the run folder stays consistent, and a second process resumes it.
// Not a test of the store's races (test_population) or of the mutations (test_mutation).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "evo/data.h"
#include "evo/dna.h"
#include "evo/population.h"
#include "cuda/emu/runtime.h"
#include "evo/search.h"
#include "src/search/final.h"
#include "support.h"

using namespace evo;

TEST_CASE("A tiny search on the CPU beats its initial individuals and resumes", "[search]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  const test::TempPath dir("search");
  SearchOptions o;
  o.run_dir = dir.path;
  // One worker (of both cores): the run then repeats child for child from its seed, so a failure
  // replays with --rng-seed (with two workers their interleaving differed from run to run, and a
  // CI failure at --rng-seed 3379292851 could not be repeated).
  o.devices = {Device::cpu()};
  // Sized so that "evolution beats the start" fails by chance rarely, not 1 run in 20 as it did
  // with 60 children, the paper's inheritance and 1,000 validation images (3 of 60 seeds had no
  // child beat the luckiest initial net; one CI run failed that way). The initial net (global
  // pooling, then a linear layer) sees only the image's mean brightness and stops near 22%; the
  // best of six such nets is a lucky draw that a child must beat. With the CPU default (children
  // keep their parent's weights and train on), 150 children and the whole validation split (6,000
  // images: sd 0.55 points instead of 1.3), 60 seeds passed, the smallest margin 1.0 point (most
  // runs end at 24-60%). About 5 s on 2 cores.
  o.population = 6;
  o.steps = 100;
  o.max_children = 150;
  o.max_train = 4000;
  o.max_val = 10000;
  o.inheritance = Inheritance::Keep;
  o.seed = test::rng()() % 1000;
  o.ensemble = 3;
  // A summary every second: each rewrites the report and trials.csv while the search goes on.
  o.summary_every = 1;
  std::atomic<bool> stop{false};
  // What the search tells its observer (evo search prints it): one start, then every child.
  struct Recorder : SearchObserver {
    std::string report;
    int starts = 0, saw_report = 0;
    std::size_t resumed = 99;
    std::vector<ChildDone> children;
    void started(const SearchStart& st) override {
      ++starts;
      resumed = st.resumed;
    }
    void child_done(const ChildDone& c) override {
      children.push_back(c);
      saw_report += std::filesystem::exists(report);  // written mid-run, by a summary
    }
  } heard;
  heard.report = dir.path + "/report.html";
  const SearchSummary s = run_search(o, stop, &heard);
  INFO("seed " << o.seed << ": " << s.failed << " children failed");
  CHECK(s.children + s.failed == 150);
  CHECK_FALSE(s.stopped);  // its --max-children ended it
  CHECK(heard.starts == 1);
  CHECK(heard.resumed == 0);
  REQUIRE(heard.children.size() == 150);
  for (std::size_t i = 1; i < heard.children.size(); ++i)  // one call at a time, in order
    CHECK(heard.children[i].best_val >= heard.children[i - 1].best_val);
  CHECK(heard.children.back().best_val == Approx(s.best_val));

  Population pop(o.run_dir);
  const std::vector<IndividualRecord> all = pop.all_individuals();
  CHECK(all.size() == 150);
  for (const ChildDone& c : heard.children) {
    const std::optional<IndividualRecord> r = pop.read(c.record.id);
    REQUIRE(r);
    CHECK(r->fitness == c.record.fitness);
  }
  double best_initial = 0, best = 0;
  int evolved_convs = 0;
  for (const IndividualRecord& r : all) {
    if (r.mutation == "initial") best_initial = std::max(best_initial, r.fitness);
    best = std::max(best, r.fitness);
    evolved_convs += r.mutation == "insert-convolution";
  }
  INFO("best initial " << best_initial << ", best " << best);
  // Evolution (with weight inheritance, children keep training) beats the trivial start.
  CHECK(best > best_initial);
  CHECK(evolved_convs > 0);
  CHECK(pop.alive_ids().size() == 6);  // the population keeps its size exactly once settled
  CHECK(s.best_val == Approx(best));
  CHECK(s.best_test > 0.15);  // chance is 0.1
  CHECK(s.ensemble_size == 3);
  CHECK(std::filesystem::exists(s.report_path));
  INFO("children that saw a report written mid-run: " << heard.saw_report);
  CHECK(heard.saw_report > 0);
  // The trial log at the end: a header and one row per individual.
  CHECK(s.trials_path == dir.path + "/trials.csv");
  {
    std::ifstream csv(s.trials_path);
    int lines = 0;
    for (std::string line; std::getline(csv, line);) ++lines;
    CHECK(lines == 151);  // mutation details are one line each (test_report covers quoting)
  }

  // A second run on the same folder resumes the population rather than starting again.
  o.max_children = 4;
  const SearchSummary again = run_search(o, stop);
  CHECK(again.children + again.failed == 4);
  const std::vector<IndividualRecord> after = Population(o.run_dir).all_individuals();
  CHECK(after.size() == 154);
  int initial = 0;
  for (const IndividualRecord& r : after) initial += r.mutation == "initial";
  CHECK(initial == 6);
}

TEST_CASE("Aging selection removes the oldest individual other than the parent", "[search]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  const test::TempPath dir("aging");
  SearchOptions o;
  o.run_dir = dir.path;
  o.devices = {Device::cpu()};  // one worker: each kill sees a settled population
  o.population = 5;
  o.steps = 10;
  o.max_children = 30;
  o.max_train = 1000;
  o.max_val = 200;
  o.selection = Selection::Aging;
  o.sample_size = 3;
  o.seed = test::rng()() % 1000;
  o.ensemble = 1;
  std::atomic<bool> stop{false};
  run_search(o, stop);

  const std::vector<IndividualRecord> all = Population(o.run_dir).all_individuals();
  REQUIRE(all.size() == 30);
  std::map<std::string, IndividualRecord> by_id;
  for (const IndividualRecord& r : all) by_id[r.id] = r;
  int kills = 0;
  for (const IndividualRecord& victim : all) {
    if (victim.alive()) continue;
    ++kills;
    const double t = victim.death_time;
    REQUIRE(by_id.count(victim.killed_by) == 1);
    const std::string parent = by_id.at(victim.killed_by).parent;
    CHECK(parent != victim.id);
    for (const IndividualRecord& other : all) {
      const bool alive_then = other.birth_time < t && (other.alive() || other.death_time >= t);
      if (!alive_then || other.id == victim.id || other.id == parent) continue;
      INFO("victim " << victim.id << " born " << victim.birth_time << ", " << other.id
                     << " alive then and born " << other.birth_time);
      CHECK(victim.birth_time <= other.birth_time);
    }
  }
  CHECK(kills == 30 - 5);  // every child after the initial five replaced one individual
  CHECK(Population(o.run_dir).alive_ids().size() == 5);
}

// A worker of another process dies holding a slot (its staging child killed an individual): a
// running search reclaims that slot within recover_every, not only when it next starts.
TEST_CASE("A running search reclaims the slot of a worker that died", "[search]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  const test::TempPath dir("reclaim");
  SearchOptions o;
  o.run_dir = dir.path;
  o.devices = {Device::cpu()};
  o.population = 4;
  o.steps = 5;
  o.max_train = 1000;
  o.max_val = 200;
  o.seed = test::rng()() % 1000;
  o.ensemble = 1;
  o.recover_every = 0.2;
  std::atomic<bool> stop{false};
  bool reclaimed = false;
  std::string planted;
  std::thread dead_peer([&] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (!std::filesystem::exists(dir.path + "/run.json")) continue;
      Population pop(o.run_dir);
      const std::vector<std::string> alive = pop.alive_ids();
      if (alive.size() < 4) continue;
      // The peer: a child that killed alive[0], owned by a process that has exited.
      Population::Staging s = pop.begin_child();
      if (!pop.kill(s, alive[0])) continue;
      const pid_t pid = ::fork();
      if (pid == 0) ::_exit(0);
      ::waitpid(pid, nullptr, 0);
      nlohmann::json owner = nlohmann::json::parse(std::ifstream(s.dir + "/owner.json"));
      owner["pid"] = int(pid);
      std::ofstream(s.dir + "/owner.json", std::ios::trunc) << owner.dump();
      planted = s.dir;
      new Population::Staging(std::move(s));  // leaked: never abandoned, as by a dead process
      break;
    }
    while (!planted.empty() && std::chrono::steady_clock::now() < deadline) {
      if (!std::filesystem::exists(planted)) {
        reclaimed = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop = true;
  });
  const SearchSummary s = run_search(o, stop);
  dead_peer.join();
  CHECK(s.stopped);  // the caller stopped it: evo search says "run the same command to resume"
  INFO("planted child " << planted);
  CHECK(!planted.empty());
  CHECK(reclaimed);  // gone while the search was still running
}

// --max-params / --max-flops: no individual of the run is over a limit (mutations over them are
// drawn again, and say so), and a limit the initial individual already breaks is a usage error.
TEST_CASE("Size limits: no individual over --max-params or --max-flops", "[search]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  for (const bool by_flops : {false, true}) {
    const test::TempPath dir("limits");
    SearchOptions o;
    o.run_dir = dir.path;
    o.devices = {Device::cpu()};
    o.population = 4;
    o.steps = 5;
    o.max_children = 120;  // P(no INSERT-CONVOLUTION drawn) = (10/11)^116 < 1e-4
    o.max_train = 1000;
    o.max_val = 200;
    o.seed = test::rng()() % 1000;
    o.ensemble = 1;
    // 25 parameters: the initial individual (20) and identity or batch-norm edges fit; a 3x3
    // convolution (29 or more with the classifier) does not, and INSERT-CONVOLUTION is drawn in
    // about 1 of 11 mutations. 10,000 FLOPs: any convolution on 28x28 (14,112 or more) is over.
    if (by_flops)
      o.max_flops = 10000;
    else
      o.max_params = 25;
    std::atomic<bool> stop{false};
    run_search(o, stop);
    Population pop(o.run_dir);
    const std::vector<IndividualRecord> all = pop.all_individuals();
    REQUIRE(all.size() == 120);
    int redrawn = 0;
    for (const IndividualRecord& r : all) {
      redrawn += r.detail.find("drawn again") != std::string::npos ||
                 r.detail.find("the parent unchanged") != std::string::npos;
      const std::string dna = pop.dna_path(r.id);
      const CompiledDna plan = compile(load_dna(dna), 28, 28, 1, 10);
      INFO(r.id << " " << r.mutation << " " << r.detail);
      if (by_flops)
        CHECK(plan.forward_flops <= 10000);
      else
        CHECK(plan.param_count <= 25);
      CHECK(plan.param_count == r.params);
    }
    CHECK(redrawn > 0);  // the limit was met, not just never reached
  }
  SearchOptions o;
  const test::TempPath dir("limits");
  o.run_dir = dir.path;
  o.devices = {Device::cpu()};
  o.population = 2;
  o.max_train = 1000;
  o.max_params = 5;  // the initial individual has 20
  std::atomic<bool> stop{false};
  CHECK_THROWS_AS(run_search(o, stop), UsageError);
  CHECK(!std::filesystem::exists(o.run_dir));
}

// A GPU that breaks for good (issue 12): the emulator poisons its device as a fault poisons a
// CUDA context. The worker on it abandons its child (nothing published, so no individual dies
// for a child that says nothing about its DNA), stops with a message naming the device, and the
// CPU worker carries the run to max_children. An out-of-memory child is one failed child, and the
// worker goes on.
TEST_CASE("A worker whose GPU fails for good stops; out of memory fails one child", "[search][emu]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  struct Injector : SearchObserver {
    emu::cudaError_t code;
    int after;
    std::vector<std::string> warnings;
    std::vector<ChildDone> children;
    Injector(emu::cudaError_t c, int a) : code(c), after(a) {}
    // After the data set is on every device, before any worker runs.
    void started(const SearchStart&) override { emu::inject_error(code, after); }
    void warning(const std::string& line) override { warnings.push_back(line); }
    void child_done(const ChildDone& c) override { children.push_back(c); }
  };
  SearchOptions o;
  o.population = 3;
  o.steps = 4;
  o.max_children = 8;
  o.max_train = 400;
  o.max_val = 100;
  o.seed = test::rng()() % 1000;
  o.ensemble = 1;
  o.recover_every = 0;
  std::atomic<bool> stop{false};
  struct Reset {  // the emulator's sticky error must not outlive a section, even a failing one
    ~Reset() { emu::reset_errors(); }
  } reset;

  SECTION("an illegal address stops the GPU's worker, the CPU's goes on") {
    const test::TempPath dir("sticky");
    o.run_dir = dir.path;
    o.devices = {Device::emu(), Device::cpu()};
    Injector in(emu::cudaErrorIllegalAddress, 30);  // inside the emu worker's first child
    const SearchSummary s = run_search(o, stop, &in);
    INFO("warnings: " << in.warnings.size());
    bool stopped = false;
    for (const std::string& w : in.warnings) {
      INFO(w);
      stopped |= w.find("emu") != std::string::npos &&
                 w.find("failed for good") != std::string::npos;
    }
    CHECK(stopped);
    CHECK(s.children + s.failed == 8);
    const std::vector<IndividualRecord> all = Population(o.run_dir).all_individuals();
    CHECK(all.size() == 8);
    for (const IndividualRecord& r : all) {
      INFO(r.id << " " << r.worker << " " << r.failure);
      CHECK_FALSE(r.failed);  // the broken GPU's child was abandoned, not published as failed
    }
    CHECK(Population(o.run_dir).alive_ids().size() == 3);
  }
  SECTION("out of memory fails one child and the worker goes on") {
    const test::TempPath dir("oom");
    o.run_dir = dir.path;
    o.devices = {Device::emu()};
    o.max_children = 5;
    Injector in(emu::cudaErrorMemoryAllocation, 3);  // a buffer of the first child's model
    const SearchSummary s = run_search(o, stop, &in);
    CHECK(s.failed == 1);
    CHECK(s.children + s.failed == 5);
    int oom = 0;
    for (const IndividualRecord& r : Population(o.run_dir).all_individuals()) {
      INFO(r.id << " " << r.failure);
      oom += r.failed && r.failure.find("memory") != std::string::npos;
    }
    CHECK(oom == 1);
    for (const std::string& w : in.warnings) CHECK(w.find("stopped") == std::string::npos);
  }
  SECTION("children that fail in a row make the worker wait, 1 s after the third, then 2 s") {
    const test::TempPath dir("backoff");
    o.run_dir = dir.path;
    o.devices = {Device::emu()};
    o.max_children = 5;
    // Kernel executions 0-3 after the start fail (out of resources: not sticky), so each of the
    // first four children fails at its first kernel; the fifth trains.
    struct Repeated : Injector {
      using Injector::Injector;
      void started(const SearchStart&) override {
        for (int k = 0; k < 4; ++k) emu::inject_error(code, k);
      }
    } in(emu::cudaErrorLaunchOutOfResources, 0);
    const SearchSummary s = run_search(o, stop, &in);
    REQUIRE(in.children.size() == 5);
    CHECK(s.failed == 4);
    for (int i = 0; i < 4; ++i) CHECK(in.children[std::size_t(i)].record.failed);
    CHECK_FALSE(in.children[4].record.failed);
    // Waits only after the third failure in a row: 1 s before the fourth child, 2 s before the
    // fifth (each child itself takes milliseconds on these 4 steps).
    const double gap3 = in.children[3].elapsed - in.children[2].elapsed;
    const double gap4 = in.children[4].elapsed - in.children[3].elapsed;
    INFO("gaps " << gap3 << " s, " << gap4 << " s");
    CHECK(gap3 >= 0.95);
    CHECK(gap4 >= 1.95);
    CHECK(in.children[2].elapsed - in.children[0].elapsed < 0.9);
  }
}

// ---- beyond the paper: fitted filters, cost ties, the final phase --------------------------------

namespace {

// A chain of convolutions from the input, one per entry: {filter size, stride scale}.
Dna conv_chain(const std::vector<std::pair<int, int>>& convs) {
  nlohmann::json j = {{"format", "evo-dna/1"}, {"learning_rate", 0.1}, {"input", "v0"},
                      {"output", "v" + std::to_string(convs.size())},
                      {"next_id", 100}, {"vertices", nlohmann::json::array()},
                      {"edges", nlohmann::json::array()}};
  j["vertices"].push_back({{"id", "v0"}, {"activation", "linear"}});
  for (std::size_t i = 0; i < convs.size(); ++i) {
    j["vertices"].push_back({{"id", "v" + std::to_string(i + 1)}, {"activation", "bn_relu"}});
    j["edges"].push_back({{"id", "e" + std::to_string(50 + i)}, {"from", "v" + std::to_string(i)},
                          {"to", "v" + std::to_string(i + 1)}, {"type", "conv"}, {"skip", false},
                          {"depth_factor", 1.0}, {"filter", {convs[i].first, convs[i].first}},
                          {"stride_scale", convs[i].second}});
  }
  return dna_from_json(j);
}

}  // namespace

TEST_CASE("misfit_convs counts filters larger than their map and strides on 1x1 maps",
          "[search]") {
  // An 8x8 input; stride scale s is stride 2^s ('same' padding: the map becomes ceil(8 / 2^s)).
  CHECK(misfit_convs(compile(conv_chain({{3, 0}, {5, 0}}), 8, 8, 1, 10)) == 0);
  CHECK(misfit_convs(compile(conv_chain({{9, 0}}), 8, 8, 1, 10)) == 1);          // 9x9 on 8x8
  CHECK(misfit_convs(compile(conv_chain({{3, 2}, {3, 0}}), 8, 8, 1, 10)) == 1);  // 3x3 on 2x2
  CHECK(misfit_convs(compile(conv_chain({{3, 2}, {1, 0}}), 8, 8, 1, 10)) == 0);  // 1x1 on 2x2
  CHECK(misfit_convs(compile(conv_chain({{1, 3}, {3, 0}}), 8, 8, 1, 10)) == 1);  // 3x3 on 1x1
  CHECK(misfit_convs(compile(conv_chain({{1, 3}, {1, 1}}), 8, 8, 1, 10)) == 1);  // stride 2 on 1x1
  CHECK(misfit_convs(compile(conv_chain({{1, 3}, {1, 0}}), 8, 8, 1, 10)) == 0);
  CHECK(misfit_convs(compile(conv_chain({{9, 0}, {3, 2}, {3, 0}}), 8, 8, 1, 10)) == 2);
}

TEST_CASE("--fit-filters: no child adds a convolution that misfits its map", "[search]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  const test::TempPath dir("fit");
  SearchOptions o;
  o.run_dir = dir.path;
  o.devices = {Device::cpu()};
  o.population = 3;
  o.steps = 2;
  o.max_children = 200;
  o.max_train = 500;
  o.max_val = 100;
  o.fit_filters = true;
  o.seed = test::rng()() % 1000;
  INFO("seed " << o.seed);
  std::atomic<bool> stop{false};
  run_search(o, stop);
  Population pop(o.run_dir);
  const std::vector<IndividualRecord> all = pop.all_individuals();
  REQUIRE(all.size() == 200);
  int convs = 0;
  for (const IndividualRecord& r : all) {
    const CompiledDna plan = compile(load_dna(pop.dna_path(r.id)), 28, 28, 1, 10);
    INFO(r.id << " " << r.mutation << " " << r.detail);
    CHECK(misfit_convs(plan) == 0);
    for (const EdgePlan& e : plan.edges) convs += e.type == EdgeType::Conv;
  }
  CHECK(convs > 0);
}

TEST_CASE("--cost-tie: a tournament's parent is the cheaper of two within the margin",
          "[search]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  for (const double tie : {0.0, 1.0}) {  // none, and every pair a tie (100 points)
    INFO("cost tie " << tie);
    const test::TempPath dir("tie");
    SearchOptions o;
    o.run_dir = dir.path;
    o.devices = {Device::cpu()};
    o.population = 4;
    o.steps = 3;
    o.max_children = 80;
    o.max_train = 500;
    o.max_val = 200;
    o.cost_tie = tie;
    o.seed = test::rng()() % 1000;
    INFO("seed " << o.seed);
    std::atomic<bool> stop{false};
    run_search(o, stop);
    std::map<std::string, IndividualRecord> by_id;
    for (IndividualRecord& r : Population(o.run_dir).all_individuals()) by_id[r.id] = r;
    const auto per_step = [](const IndividualRecord& r) { return r.flops / double(r.steps); };
    int tournaments = 0, cheaper_won = 0;
    for (const auto& [id, dead] : by_id) {
      if (dead.alive() || dead.killed_by.empty()) continue;
      // The victim and its killer's parent were the two sampled; the parent won.
      const IndividualRecord& child = by_id.at(dead.killed_by);
      REQUIRE(by_id.count(child.parent));
      const IndividualRecord& winner = by_id.at(child.parent);
      ++tournaments;
      INFO("winner " << winner.id << " " << winner.fitness << " " << per_step(winner)
                     << ", loser " << dead.id << " " << dead.fitness << " " << per_step(dead));
      if (tie > 0)
        CHECK(per_step(winner) <= per_step(dead));
      else
        CHECK(winner.fitness >= dead.fitness);
      cheaper_won += per_step(winner) < per_step(dead);
    }
    CHECK(tournaments > 50);
    if (tie > 0) CHECK(cheaper_won > 0);  // the costs did differ, and the rule chose by them
  }
}

TEST_CASE("The final phase trains the best distinct architectures and keeps the best in final/",
          "[search]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  // Width 1: the architectures train on from their weights; 2: widened, from fresh weights; 0:
  // auto, each as wide as the time allows (probes timed, then from fresh weights unless 1).
  const double width = GENERATE(1.0, 2.0, 0.0);
  INFO("final width " << width);
  const test::TempPath dir("final");
  SearchOptions o;
  o.run_dir = dir.path;
  o.devices = {Device::cpu(), Device::cpu()};
  o.threads_per_worker = 1;
  o.population = 6;
  o.steps = 50;
  o.max_train = 2000;
  o.max_val = 1000;
  o.ensemble = 2;
  // 24 s: 9.6 s of search (dozens of children), then the final phase: 24 - 9.6 - the margin of
  // min(15, 0.25 * 24) = 6 s for the end's evaluation and report, so ~8 s of training each (a
  // phase shorter than 5 s is not run).
  o.time_limit = 24;
  o.final_share = 0.6;
  o.final_width = width;
  o.seed = test::rng()() % 1000;
  INFO("seed " << o.seed);
  std::atomic<bool> stop{false};
  struct Recorder : SearchObserver {
    int started = 0;
    std::vector<FinalModel> done;
    void final_started(int, double) override { ++started; }
    void final_done(const FinalModel& m) override { done.push_back(m); }
  } heard;
  const SearchSummary s = run_search(o, stop, &heard);
  CHECK(heard.started == 1);
  REQUIRE(s.final_models == 2);
  REQUIRE(heard.done.size() == 2);
  for (const FinalModel& m : heard.done) {
    INFO(m.id << ": " << m.failure);
    REQUIRE_FALSE(m.failed);
  }
  REQUIRE(std::isfinite(s.final_test));
  // Two architectures, not two clones (the learning rate aside).
  Dna a = load_dna(dir.path + "/final/" + heard.done[0].folder + "/dna.json");
  Dna b = load_dna(dir.path + "/final/" + heard.done[1].folder + "/dna.json");
  // Each is its individual's DNA, the convolution that reads the image's channels `width` times
  // deeper: the in-edge of the first vertex of the compiled backbone that a conv makes.
  for (const FinalModel& m : heard.done) {
    const Dna mine = load_dna(dir.path + "/final/" + m.folder + "/dna.json");
    const Dna source = load_dna(Population(o.run_dir).dna_path(m.id));
    const CompiledDna sp = compile(source, 28, 28, 1, 10);
    std::string first_conv;
    for (std::size_t vi = 1; vi < sp.vertices.size() && first_conv.empty(); ++vi) {
      const EdgePlan& in = sp.edges[sp.vertices[vi].in_edges.front()];
      if (in.type == EdgeType::Conv) first_conv = in.id;
    }
    auto reads_image = [&](const Edge& e) { return e.id == first_conv; };
    REQUIRE(mine.edges.size() == source.edges.size());
    for (std::size_t i = 0; i < mine.edges.size(); ++i)
      CHECK(mine.edges[i].depth_factor ==
            (reads_image(source.edges[i]) ? m.width : 1.0) * source.edges[i].depth_factor);
    CHECK(m.params == compile(mine, 28, 28, 1, 10).param_count);
    if (width > 0) {
      // Width 1 where `width` changes no channel count (nothing reads the image's channels, or
      // they round to the same): the net then trains on from its weights.
      Dna scaled = source;
      for (Edge& e : scaled.edges)
        if (reads_image(e)) e.depth_factor *= width;
      const bool changes = compile(scaled, 28, 28, 1, 10).param_count != sp.param_count;
      CHECK(m.width == (changes ? width : 1.0));
    } else {
      CHECK(std::count(std::begin(detail::kFinalWidths), std::end(detail::kFinalWidths),
                       m.width) == 1);
    }
    // Its metrics say how wide it trained and, for auto, what the probes measured.
    std::ifstream mf(dir.path + "/final/" + m.folder + "/metrics.json");
    const nlohmann::json mj = nlohmann::json::parse(mf);
    CHECK(mj.at("width") == m.width);
    CHECK(mj.at("from") == (m.width == 1 ? "weights" : "scratch"));
    CHECK(mj.contains("width_rule") == (width == 0));
    CHECK(m.epochs == Approx(double(m.steps) * o.batch / o.max_train));
  }
  a.learning_rate = b.learning_rate = 0;
  CHECK(to_json(a) != to_json(b));
  // The final model is the one with the best validation accuracy, and its test accuracy is what
  // its saved weights measure on the same test images, evaluated here afresh.
  // (On a tie either may be chosen; the first by rank is.)
  const double best_val = std::max(heard.done[0].val, heard.done[1].val);
  CHECK(s.final_val == best_val);
  const FinalModel& best = heard.done[0].id == s.final_id ? heard.done[0] : heard.done[1];
  CHECK(best.id == s.final_id);
  CHECK(best.val == best_val);
  for (const FinalModel& m : heard.done) {
    CHECK_FALSE(m.failed);
    CHECK(m.steps > 0);
  }
  DataOptions dopts;
  dopts.val_fraction = o.val_fraction;
  dopts.seed = o.seed;
  dopts.max_train = o.max_train;
  const Dataset data = load_dataset(o.data, dopts);
  const DeviceDataset dev = DeviceDataset::upload(data, Device::cpu());
  Context ctx(Device::cpu(), 1);
  const std::string folder = dir.path + "/final/" + best.folder;
  const CompiledDna plan = compile(load_dna(folder + "/dna.json"), 28, 28, 1, 10);
  Weights w = load_weights(folder + "/weights.evow", plan, Device::cpu());
  Model model(plan, kEvalBatch, ctx);
  model.bind(w);
  CHECK(evaluate_model(model, dev, "test", ctx).accuracy() == s.final_test);
  CHECK(s.final_folder == "final/" + best.folder);
  // The ensemble's validation accuracy, from both models' files, averaged here on the run's
  // validation images (capped by --max-val); the answer is the ensemble exactly when that beats
  // the final model's (ensemble_is_answer).
  {
    DataOptions capped = dopts;
    capped.max_val = o.max_val;
    const Dataset vdata = load_dataset(o.data, capped);
    const DeviceDataset vdev = DeviceDataset::upload(vdata, Device::cpu());
    std::vector<double> sum;
    for (const FinalModel& m : heard.done) {
      const std::string f = dir.path + "/final/" + m.folder;
      const CompiledDna p = compile(load_dna(f + "/dna.json"), 28, 28, 1, 10);
      Weights mw = load_weights(f + "/weights.evow", p, Device::cpu());
      Model mm(p, kEvalBatch, ctx);
      mm.bind(mw);
      const EvalResult v = evaluate_model(mm, vdev, "val", ctx, true);
      sum.resize(v.probabilities.size());
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += v.probabilities[i];
    }
    int correct = 0;
    for (std::size_t i = 0; i < vdata.val.labels.size(); ++i) {
      const double* q = sum.data() + i * 10;
      correct += int(std::max_element(q, q + 10) - q) == vdata.val.labels[i];
    }
    const double ens_val = double(correct) / double(vdata.val.labels.size());
    CHECK(s.final_ensemble_val == Approx(ens_val).margin(1e-12));
    const bool wins = ens_val > best_val;
    CHECK(s.answer == (wins ? "ensemble" : "final model"));
    CHECK(s.answer_test == (wins ? s.final_ensemble_test : s.final_test));
    std::printf("final phase: models val %.4f, %.4f; ensemble val %.4f; answer %s\n",
                heard.done[0].val, heard.done[1].val, ens_val, s.answer.c_str());
  }
  // evo best measures the same final model again from the files, with the same result.
  const SearchSummary again = best_of_run(o.run_dir, o.data, o.ensemble, Device::cpu(), o.seed,
                                          o.val_fraction, o.max_train, /*final_phase=*/true);
  CHECK(again.damaged.empty());
  CHECK(again.final_id == s.final_id);
  CHECK(again.final_folder == s.final_folder);
  CHECK(again.final_val == s.final_val);
  CHECK(again.final_test == s.final_test);
  CHECK(again.final_models == 2);
  CHECK(again.final_ensemble_test == s.final_ensemble_test);
  CHECK(again.final_ensemble_val == s.final_ensemble_val);
  CHECK(again.answer == s.answer);
  CHECK(again.answer_test == s.answer_test);
  // final.json and the retrain summary (what the report reads) say the same.
  std::ifstream f(dir.path + "/final.json");
  const nlohmann::json j = nlohmann::json::parse(f);
  CHECK(j.at("final_id") == s.final_id);
  CHECK(j.at("final_test_accuracy").get<double>() == s.final_test);
  std::ifstream g(dir.path + "/final/retrain.json");
  const nlohmann::json r = nlohmann::json::parse(g);
  CHECK(r.at("individuals").size() == 2);
  CHECK(r.at("chosen") == s.final_id);
  CHECK(r.at("ensemble_size") == 2);  // the models that trained (none failed: checked above)
  CHECK(r.at("answer") == s.answer);
  CHECK(r.at("ensemble_val").get<double>() == s.final_ensemble_val);
  FinalEnsemble fe;
  (void)read_final_phase(o.run_dir, &fe);
  CHECK(fe.size == 2);
  CHECK(fe.answer == (s.answer == "ensemble"));
  CHECK(j.at("answer") == s.answer);
  // The run.json records the rules the run was made by.
  std::ifstream h(dir.path + "/run.json");
  const nlohmann::json run = nlohmann::json::parse(h);
  CHECK(run.at("settings").at("final_share") == 0.6);
  // The time limit is recorded beside the settings, not among them (a resume may change it),
  // and the report's header shows it.
  CHECK(run.at("created_with").at("time_limit") == o.time_limit);
  CHECK_FALSE(run.at("settings").contains("time_limit"));
  {
    std::ifstream page(s.report_path);
    const std::string html((std::istreambuf_iterator<char>(page)), {});
    CHECK(html.find("time_limit") != std::string::npos);
  }
  if (width > 0)
    CHECK(run.at("settings").at("final_width") == width);
  else
    CHECK(run.at("settings").at("final_width") == "auto");
  CHECK(run.at("settings").at("final_epochs") == o.final_epochs);
  // evo best reads the widths back from retrain.json.
  for (const FinalModel& m : read_final_phase(o.run_dir)) {
    const auto it = std::find_if(heard.done.begin(), heard.done.end(),
                                 [&](const FinalModel& d) { return d.id == m.id; });
    REQUIRE(it != heard.done.end());
    CHECK(m.width == it->width);
  }
  CHECK(run.at("settings").at("lr_schedule") == "constant");
}

namespace {

// n random side x side x 1 images of 10 classes: what choose_width times does not depend on
// what the images show.
DeviceDataset random_images(int n, int side) {
  Dataset data;
  data.name = "random";
  data.classes = 10;
  auto make = [&](int count) {
    ImageSet s;
    s.n = count;
    s.h = s.w = side;
    s.c = 1;
    for (int i = 0; i < count * side * side; ++i) s.pixels.push_back(uint8_t(test::rng()()));
    for (int i = 0; i < count; ++i) s.labels.push_back(int32_t(test::rng()() % 10));
    return s;
  };
  data.train = make(n);
  data.val = make(20);
  data.test = make(20);
  data.mean = {128.f};
  data.std = {70.f};
  return DeviceDataset::upload(data, Device::cpu());
}

Dna two_convs() {
  return parse_dna(R"({"format": "evo-dna/1", "learning_rate": 0.05, "input": "v0",
    "output": "v2", "next_id": 5,
    "vertices": [{"id": "v0", "activation": "linear"}, {"id": "v1", "activation": "bn_relu"},
                 {"id": "v2", "activation": "bn_relu"}],
    "edges": [{"id": "e3", "from": "v0", "to": "v1", "type": "conv", "skip": false,
               "depth_factor": 2.0, "filter": [3, 3], "stride_scale": 1},
              {"id": "e4", "from": "v1", "to": "v2", "type": "conv", "skip": false,
               "depth_factor": 2.0, "filter": [3, 3], "stride_scale": 0}]})",
                       "two_convs");
}

}  // namespace

TEST_CASE("One worker and one seed: a search repeats child for child", "[search]") {
  if (!test::have_fashion_mnist()) {
    WARN("Fashion-MNIST is not installed (tools/setup.sh installs it): skipped");
    return;
  }
  // Issue 29: the same --seed must give the same search, so that a result can be reproduced and
  // a regression bisected. Two runs in fresh folders, one worker each: the same children in the
  // same order (parents by birth rank: ids hold times and pids), bit for bit.
  const uint64_t seed = test::rng()() % 100000;
  INFO("seed " << seed);
  struct Child {
    int parent;  // birth rank of the parent, -1 for an initial individual
    std::string mutation, detail;
    int64_t params;
    double fitness;
    bool operator==(const Child& o) const {
      return parent == o.parent && mutation == o.mutation && detail == o.detail &&
             params == o.params && fitness == o.fitness;
    }
  };
  auto run = [&](const std::string& dir) {
    SearchOptions o;
    o.run_dir = dir;
    o.devices = {Device::cpu()};
    o.threads_per_worker = 2;
    o.population = 5;
    o.steps = 30;
    o.max_children = 40;
    o.max_train = 1000;
    o.max_val = 500;
    o.inheritance = Inheritance::Keep;
    o.lr_schedule = LrSchedule::Cosine;
    o.seed = seed;
    struct Recorder : SearchObserver {
      std::vector<ChildDone> children;
      void child_done(const ChildDone& c) override { children.push_back(c); }
    } heard;
    std::atomic<bool> stop{false};
    (void)run_search(o, stop, &heard);
    std::map<std::string, int> rank;
    std::vector<Child> out;
    for (const ChildDone& c : heard.children) {
      const auto it = rank.find(c.record.parent);
      out.push_back({it == rank.end() ? -1 : it->second, c.record.mutation, c.record.detail,
                     c.record.params, c.record.fitness});
      rank[c.record.id] = int(rank.size());
    }
    return out;
  };
  const test::TempPath a("repeat-a"), b("repeat-b");
  const std::vector<Child> first = run(a.path), second = run(b.path);
  REQUIRE(first.size() == 40);
  REQUIRE(second.size() == first.size());
  int mutated = 0;
  for (std::size_t i = 0; i < first.size(); ++i) {
    INFO("child " << i << ": " << first[i].mutation << " " << first[i].detail << " / "
                  << second[i].mutation << " " << second[i].detail);
    CHECK(first[i] == second[i]);
    mutated += first[i].parent >= 0;
  }
  CHECK(mutated == 35);  // every child after the 5 initial ones has a parent
}

TEST_CASE("widen: the first convolution on the image's path, wherever the path starts",
          "[search]") {
  // The image reaches the first conv through an identity edge (searches grow these), and a skip
  // from before that conv joins after it.
  const Dna dna = parse_dna(R"({"format": "evo-dna/1", "learning_rate": 0.05, "input": "v0",
    "output": "v3", "next_id": 10,
    "vertices": [{"id": "v0", "activation": "linear"}, {"id": "v1", "activation": "linear"},
                 {"id": "v2", "activation": "bn_relu"}, {"id": "v3", "activation": "bn_relu"}],
    "edges": [{"id": "e4", "from": "v0", "to": "v1", "type": "identity", "skip": false},
              {"id": "e5", "from": "v1", "to": "v2", "type": "conv", "skip": false,
               "depth_factor": 4.0, "filter": [3, 3], "stride_scale": 1},
              {"id": "e6", "from": "v2", "to": "v3", "type": "conv", "skip": false,
               "depth_factor": 2.0, "filter": [3, 3], "stride_scale": 0},
              {"id": "e8", "from": "v1", "to": "v3", "type": "identity", "skip": true}]})",
                            "identity_first");
  for (const double k : {2.0, 3.0}) {
    CAPTURE(k);
    const CompiledDna narrow = compile(dna, 12, 12, 1, 10);
    const CompiledDna wide = compile(detail::widen(dna, k), 12, 12, 1, 10);
    REQUIRE(wide.vertices.size() == narrow.vertices.size());
    REQUIRE(wide.edges.size() == narrow.edges.size());
    // Every tensor after the first conv is k times deeper; the image's stays as it is.
    for (std::size_t i = 0; i < narrow.vertices.size(); ++i) {
      CAPTURE(narrow.vertices[i].id);
      const int c = narrow.vertices[i].shape.c;
      CHECK(wide.vertices[i].shape.c == (i < 2 ? 1 : int(k) * c));
    }
    // Every conv's output is k times deeper.
    for (std::size_t i = 0; i < narrow.edges.size(); ++i) {
      CAPTURE(narrow.edges[i].id);
      if (narrow.edges[i].type == EdgeType::Conv)
        CHECK(wide.edges[i].out.c == int(k) * narrow.edges[i].out.c);
    }
  }
  // The classic form: the input feeds the first conv directly.
  const CompiledDna two = compile(detail::widen(two_convs(), 2), 12, 12, 1, 10);
  CHECK(two.output().shape.c == 8);  // 1 -> 4 -> 8 channels, from 1 -> 2 -> 4
  // No conv on the backbone: nothing to widen.
  const Dna initial = load_dna(std::string(EVO_SOURCE_DIR) + "/data/dna/initial.json");
  CHECK(detail::widen(initial, 2) == initial);
}

TEST_CASE("The final phase's auto width: the widest that fits the epochs and the size limits",
          "[search]") {
  const DeviceDataset dev = random_images(200, 12);
  Context ctx(Device::cpu(), 5);
  set_cpu_threads(1);
  const std::atomic<bool> stop{false};
  const Dna dna = two_convs();
  auto params_at = [&](double w) {
    return compile(detail::widen(dna, w), 12, 12, 1, 10).param_count;
  };
  SECTION("all the time in the world: the widest width, found by probes") {
    const detail::WidthChoice c =
        detail::choose_width(dna, dev, ctx, 10, 0, 1, 1e9, 0, 0, stop);
    CHECK(c.width == 8);
    REQUIRE_FALSE(c.probed.empty());
    CHECK(c.probed.size() <= 4);
    CHECK(c.probed.front().first == 2);  // the first probe is at the old default, 2x
    CHECK(c.probed.back().first == 8);
    CHECK(c.step_seconds > 0);
    CHECK(c.probe_seconds > 0.9 * double(c.probed.size()));  // ~1 s each
  }
  SECTION("a size limit: the widest width within it") {
    const detail::WidthChoice c =
        detail::choose_width(dna, dev, ctx, 10, 1, 1, 1e9, params_at(3), 0, stop);
    CHECK(c.width == 3);
    CHECK(params_at(c.width) <= params_at(3));
  }
  SECTION("no time: no probe fits, the net trains on at width 1 from its weights") {
    const detail::WidthChoice c =
        detail::choose_width(dna, dev, ctx, 10, 2, 12, 0.5, 0, 0, stop);
    CHECK(c.width == 1);
    CHECK(c.step_seconds == 0);
    CHECK(c.probed.size() == 1);
  }
  SECTION("a DNA whose image feeds no convolution does not widen: nothing to probe") {
    const Dna initial = load_dna(std::string(EVO_SOURCE_DIR) + "/data/dna/initial.json");
    const detail::WidthChoice c =
        detail::choose_width(initial, dev, ctx, 10, 0, 1, 1e9, 0, 0, stop);
    CHECK(c.width == 1);
    CHECK(c.probed.empty());
  }
}
