// Tests of the population store: runs, publish, kill and its races, recovery after kill -9, and a
// many-process search with a fake trainer. Not tests of the real search loop or of training.
#include "evo/population.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "support.h"

namespace evo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A fresh folder under TMPDIR, removed at the end.
struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/evo-population-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void sleep_seconds(double s) {
  std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

double uniform(double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(test::rng());
}

// What a trained child leaves in its staging folder: dna.json, and weights.evow of exactly
// params * 4 bytes, so a check can tell a complete file from a cut one.
void write_fake_child(const Population::Staging& s, const std::string& parent, int64_t params,
                      bool with_weights) {
  const nlohmann::json dna = {{"fake", true}, {"child", s.id}, {"parent", parent}};
  std::ofstream(s.dna_path()) << dna.dump() << "\n";
  if (with_weights) {
    std::ofstream out(s.weights_path(), std::ios::binary);
    const std::string block(std::size_t(params) * 4, 'w');
    out.write(block.data(), std::streamsize(block.size()));
  }
}

IndividualRecord fake_record(const std::string& parent, double fitness, int64_t params) {
  IndividualRecord r;
  r.parent = parent;
  r.mutation = parent.empty() ? "initial" : "FAKE";
  r.fitness = fitness;
  r.params = params;
  r.steps = 10;
  r.flops = 1e6;
  r.worker = "cpu/0";
  return r;
}

// Publishes one individual into a free slot; returns its id.
std::string publish_initial(Population& pop, double fitness) {
  Population::Staging s = pop.begin_child();
  REQUIRE(pop.take_free_slot(s) != FreeSlot::kNone);
  write_fake_child(s, "", 8, true);
  const std::string id = s.id;
  pop.publish(std::move(s), fake_record("", fitness, 8));
  return id;
}

// ---- a fake search ------------------------------------------------------------------------------

// What one worker did, for the cross-checks: ids it published, and "victim child" per kill.
struct Tally {
  std::vector<std::string> published, killed;
};

// The search loop of the paper with a trainer that sleeps: fill a free slot, or pick two at
// random, kill the worse, and publish a child of the better. 5% of children fail (fitness 0).
void fake_worker(Population& pop, const std::atomic<bool>& stop, uint64_t seed, Tally& tally) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  while (!stop) {
    Population::Staging s = pop.begin_child();
    FreeSlot slot = pop.take_free_slot(s);
    std::string parent;
    double base = u(rng);
    if (slot == FreeSlot::kNone) {
      bool placed = false;
      while (!stop && !placed) {
        const std::vector<std::string> ids = pop.alive_ids();
        if (ids.size() < 2) {
          placed = pop.take_free_slot(s) != FreeSlot::kNone;
          if (!placed) std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        const std::size_t i = rng() % ids.size(),
                          j = (i + 1 + rng() % (ids.size() - 1)) % ids.size();
        const auto a = pop.read(ids[i]), b = pop.read(ids[j]);
        if (!a || !b || !a->alive() || !b->alive()) continue;  // killed meanwhile: pick again
        const IndividualRecord& worse = a->fitness < b->fitness ? *a : *b;
        const IndividualRecord& better = a->fitness < b->fitness ? *b : *a;
        if (!pop.kill(s, worse.id)) continue;  // another worker killed it first
        tally.killed.push_back(worse.id + " " + s.id);
        parent = better.id;
        base = better.fitness;
        placed = true;
      }
      if (!placed) break;  // stopping: `s` is abandoned by its destructor
    } else if (slot == FreeSlot::kReturned) {
      const std::vector<std::string> ids = pop.alive_ids();
      if (!ids.empty()) parent = ids[rng() % ids.size()];
    }
    if (!parent.empty()) {  // the parent's DNA stays readable, alive or (killed since) dead
      const std::string text = slurp(pop.dna_path(parent));
      if (!text.empty() && !nlohmann::json::parse(text, nullptr, false).is_object())
        throw Error("damaged dna.json of parent " + parent);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 3000));  // "training"
    const bool failed = u(rng) < 0.05;
    const int64_t params = 16 + int64_t(rng() % 256);
    write_fake_child(s, parent, params, !failed);
    IndividualRecord r =
        fake_record(parent, failed ? 0 : std::clamp(base + 0.1 * (u(rng) - 0.4), 0.0, 1.0), params);
    r.failed = failed;
    if (failed) r.failure = "fake failure";
    const std::string id = s.id;
    pop.publish(std::move(s), r);
    tally.published.push_back(id);
  }
}

// A search process: `threads` fake workers for `seconds` (for ever when 0), then a log of what
// they did ("P id", "K victim child"). Runs in a forked child; returns its exit code.
int fake_search_process(const std::string& run, int n, int threads, double seconds,
                        const std::string& log_path, uint64_t seed, bool durable) {
  try {
    PopulationOptions o;
    o.size = n;
    o.durable = durable;
    Population pop(run, o);
    pop.recover(3600);  // children of earlier processes killed on this machine
    std::atomic<bool> stop{false};
    std::atomic<int> errors{0};
    std::vector<Tally> tallies(static_cast<std::size_t>(threads));
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
      workers.emplace_back([&, t] {
        try {
          fake_worker(pop, stop, seed * 31 + uint64_t(t), tallies[std::size_t(t)]);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "fake worker %d of pid %d: %s\n", t, int(::getpid()), e.what());
          ++errors;
          stop = true;
        }
      });
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (!stop && (seconds <= 0 || Clock::now() < end))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stop = true;
    for (auto& w : workers) w.join();
    std::ofstream log(log_path);
    for (const Tally& t : tallies) {
      for (const std::string& id : t.published) log << "P " << id << "\n";
      for (const std::string& k : t.killed) log << "K " << k << "\n";
    }
    return errors ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fake search process %d: %s\n", int(::getpid()), e.what());
    return 2;
  }
}

// Forked search processes; any still running when the test ends (or fails) are killed, so a
// failed REQUIRE never leaves a stopped or endless process behind.
struct Processes {
  std::vector<pid_t> pids;
  ~Processes() {
    for (pid_t pid : pids) {
      ::kill(pid, SIGKILL);
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  }
  void forget(pid_t pid) { pids.erase(std::remove(pids.begin(), pids.end(), pid), pids.end()); }
};

pid_t spawn_search(Processes& procs, const std::string& run, int n, int threads, double seconds,
                   const std::string& log_path, bool durable) {
  const uint64_t seed = test::rng()();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(fake_search_process(run, n, threads, seconds, log_path, seed, durable));
  procs.pids.push_back(pid);
  return pid;
}

// Stops a process and waits until it is stopped (every thread, between two system calls) or has
// exited. Returns true while it still runs.
int exit_code(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool stop_process(Processes& procs, pid_t pid, int* exit_status) {
  ::kill(pid, SIGSTOP);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, WUNTRACED) == pid);
  if (WIFSTOPPED(status)) return true;
  procs.forget(pid);
  *exit_status = status;
  return false;
}

int wait_exit(Processes& procs, pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  procs.forget(pid);
  return exit_code(status);
}

// ---- the consistency check of a quiescent run folder ------------------------------------------

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name[0] != '.') names.push_back(name);
  }
  return names;
}

std::optional<nlohmann::json> json_file(const std::string& path) {
  if (!fs::exists(path)) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(slurp(path), nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

struct Inspection {
  std::set<std::string> alive, dead, staging;
  std::size_t free = 0, held = 0;
  std::vector<std::string> problems;  // empty when consistent
};

// Reads the whole folder while nobody writes to it and checks the protocol's invariants: every
// alive individual is complete; nobody is alive and dead; every slot (the N initial ones and one
// per kill) is in exactly one place; |alive| + |free| + |held| = N.
Inspection inspect(const std::string& run, int n) {
  Inspection in;
  auto problem = [&](const std::string& p) {
    if (in.problems.size() < 20) in.problems.push_back(p);
  };
  std::map<std::string, int> slots;         // slot id -> places it is in
  std::map<std::string, int> victim_slots;  // victim id -> slots naming it
  auto count_slot = [&](const std::optional<nlohmann::json>& slot, const std::string& where) {
    if (!slot || !slot->is_object() || !slot->contains("slot")) {
      problem(where + ": missing or damaged slot file");
      return;
    }
    ++slots[slot->at("slot").get<std::string>()];
    if (slot->value("origin", "") == "kill") ++victim_slots[slot->value("victim", "")];
  };
  for (const std::string& id : names_in(run + "/alive")) in.alive.insert(id);
  for (const std::string& id : names_in(run + "/dead")) in.dead.insert(id);
  for (const std::string& id : in.alive) {
    const std::string d = run + "/alive/" + id;
    if (in.dead.count(id)) problem(id + " is alive and dead");
    const auto dna = json_file(d + "/dna.json");
    const auto metrics = json_file(d + "/metrics.json");
    if (!dna || !metrics) {
      problem("alive/" + id + ": dna.json or metrics.json missing or damaged");
      continue;
    }
    const IndividualRecord r = record_from_json(*metrics, d);
    if (r.id != id) problem("alive/" + id + ": metrics.json names " + r.id);
    if (!r.failed) {
      std::error_code ec;
      const auto size = fs::file_size(d + "/weights.evow", ec);
      if (ec || size != std::uintmax_t(r.params * 4))
        problem("alive/" + id + ": weights.evow missing or cut short");
    }
    if (fs::exists(d + "/death.json")) problem("alive/" + id + " has a death.json");
    count_slot(json_file(d + "/slot.json"), "alive/" + id);
  }
  for (const std::string& id : in.dead) {
    const std::string d = run + "/dead/" + id;
    const auto death = json_file(d + "/death.json");
    if (!json_file(d + "/metrics.json") || !json_file(d + "/dna.json"))
      problem("dead/" + id + ": dna.json or metrics.json missing or damaged");
    if (!death || death->value("killed_by", "").empty())
      problem("dead/" + id + ": death.json missing or without killed_by");
    count_slot(json_file(d + "/slot.json"), "dead/" + id);
  }
  for (const std::string& name : names_in(run + "/free")) {
    ++in.free;
    count_slot(json_file(run + "/free/" + name), "free/" + name);
  }
  std::set<std::string> in_flight_victims;
  for (const std::string& id : names_in(run + "/staging")) {
    in.staging.insert(id);
    const std::string d = run + "/staging/" + id;
    std::vector<std::string> victims;
    for (const std::string& name : names_in(d))
      if (name.rfind("victim-", 0) == 0) victims.push_back(name.substr(7));
    if (victims.size() > 1) problem("staging/" + id + " holds several victims");
    for (const std::string& v : victims) {  // dead already, on its way to dead/
      in_flight_victims.insert(v);
      count_slot(json_file(d + "/victim-" + v + "/slot.json"), "staging/" + id + "/victim-" + v);
    }
    const bool has_slot_file = fs::exists(d + "/slot.json");
    if (has_slot_file) {
      count_slot(json_file(d + "/slot.json"), "staging/" + id);
    } else if (!victims.empty()) {  // killed, slot.json not written yet: the victim is the slot
      ++slots["kill-" + victims[0]];
      ++victim_slots[victims[0]];
    }
    if (has_slot_file || !victims.empty()) ++in.held;
  }
  for (const auto& [slot, places] : slots)
    if (places != 1) problem("slot " + slot + " is in " + std::to_string(places) + " places");
  int initial = 0;
  for (const auto& [slot, places] : slots) initial += slot.rfind("init-", 0) == 0;
  if (initial != n) problem(std::to_string(initial) + " initial slots, not " + std::to_string(n));
  for (const std::string& id : in.dead)
    if (victim_slots[id] != 1)
      problem("dead/" + id + " is the victim of " + std::to_string(victim_slots[id]) +
              " slots, not 1");
  for (const auto& [victim, count] : victim_slots)
    if (!in.dead.count(victim) && !in_flight_victims.count(victim))
      problem("a slot names victim " + victim + ", which is not dead");
  if (in.alive.size() + in.free + in.held != std::size_t(n))
    problem("alive " + std::to_string(in.alive.size()) + " + free " + std::to_string(in.free) +
            " + held " + std::to_string(in.held) + " != N = " + std::to_string(n));
  return in;
}

void require_consistent(const Inspection& in) {
  for (const std::string& p : in.problems) UNSCOPED_INFO(p);
  REQUIRE(in.problems.empty());
}

// ---- unit tests ---------------------------------------------------------------------------------

TEST_CASE("a new run has N free slots; reopening it checks the size and settings", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/runs/a";
  PopulationOptions o;
  o.size = 5;
  o.settings = {{"steps", 100}, {"data", "fashion-mnist"}};
  Population pop(run, o);
  CHECK(pop.size() == 5);
  CHECK(pop.free_count() == 5);
  CHECK(pop.alive_ids().empty());
  CHECK(fs::exists(run + "/run.json"));

  Population again(run);  // size 0: open only
  CHECK(again.size() == 5);
  CHECK(again.settings().at("steps") == 100);
  CHECK(again.free_count() == 5);  // not created twice

  PopulationOptions other = o;
  other.size = 6;
  REQUIRE_THROWS_WITH(Population(run, other), Catch::Contains("population of 5"));
  other = o;
  other.settings["steps"] = 200;
  REQUIRE_THROWS_WITH(Population(run, other), Catch::Contains("steps"));
  other.settings = {{"time_limit", 60}};  // a key the run does not pin
  CHECK_NOTHROW(Population(run, other));

  REQUIRE_THROWS_AS(Population(tmp.path + "/missing"), UsageError);
  fs::create_directories(tmp.path + "/not-a-run");
  std::ofstream(tmp.path + "/not-a-run/notes.txt") << "mine\n";
  REQUIRE_THROWS_WITH(Population(tmp.path + "/not-a-run", o), Catch::Contains("not empty"));
  fs::create_directories(tmp.path + "/empty");
  CHECK(Population(tmp.path + "/empty", o).free_count() == 5);
}

TEST_CASE("many threads creating one run at once make exactly one", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  const int n = 7 + int(test::rng()() % 20);
  std::atomic<int> ready{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      ++ready;
      while (ready < 8) std::this_thread::yield();  // start together
      try {
        PopulationOptions o;
        o.size = n;
        o.durable = false;
        Population pop(run, o);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        ++errors;
      }
    });
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  CHECK(names_in(run + "/free").size() == std::size_t(n));
  CHECK(names_in(tmp.path).size() == 1);  // no half-built run left beside it
  require_consistent(inspect(run, n));
}

TEST_CASE("publish, read and kill round-trip a record", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 3;
  Population pop(run, o);

  Population::Staging s = pop.begin_child();
  CHECK(fs::is_directory(s.dir));
  CHECK(pop.alive_ids().empty());  // a staging folder is never alive
  CHECK_FALSE(pop.read(s.id));
  REQUIRE(pop.take_free_slot(s) == FreeSlot::kInitial);
  CHECK(pop.free_count() == 2);

  IndividualRecord r;
  r.mutation = "INSERT-CONVOLUTION";
  r.detail = "3x3 stride 2 after v1";
  r.fitness = uniform(0.1, 0.9);
  r.test_accuracy = NAN;
  r.steps = 25600;
  r.flops = uniform(1e12, 1e15);
  r.cumulative_flops = 2 * r.flops;
  r.params = 1234;
  r.worker = "cuda:3/1";
  r.train_seconds = uniform(1, 100);
  r.learning_rate = uniform(0.01, 0.2);
  write_fake_child(s, "", r.params, true);
  const std::string id = s.id;
  const double before = double(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count()) /
                        1000.0;
  pop.publish(std::move(s), r);
  CHECK_FALSE(s.open());
  REQUIRE(pop.alive_ids() == std::vector<std::string>{id});

  const auto back = pop.read(id);
  REQUIRE(back);
  CHECK(back->id == id);
  CHECK(back->alive());
  CHECK(back->parent.empty());
  CHECK(back->mutation == r.mutation);
  CHECK(back->detail == r.detail);
  CHECK(back->fitness == r.fitness);
  CHECK(std::isnan(back->test_accuracy));
  CHECK(back->steps == r.steps);
  CHECK(back->flops == r.flops);
  CHECK(back->cumulative_flops == r.cumulative_flops);
  CHECK(back->params == r.params);
  CHECK(back->worker == r.worker);
  CHECK_FALSE(back->host.empty());
  CHECK(back->train_seconds == r.train_seconds);
  CHECK(back->learning_rate == r.learning_rate);
  CHECK(back->birth_time >= before - 1);
  CHECK(pop.dna_path(id) == run + "/alive/" + id + "/dna.json");

  // A child of it kills it: the victim goes to dead/ with death.json; the child holds its slot.
  Population::Staging c = pop.begin_child();
  REQUIRE(pop.kill(c, id));
  CHECK(pop.alive_ids().empty());
  CHECK(pop.census().held == 1);
  const auto dead = pop.read(id);
  REQUIRE(dead);
  CHECK_FALSE(dead->alive());
  CHECK(dead->killed_by == c.id);
  CHECK(dead->death_time >= back->birth_time);
  CHECK(dead->fitness == r.fitness);
  CHECK(pop.dna_path(id) == run + "/dead/" + id + "/dna.json");
  REQUIRE_THROWS_WITH(pop.kill(c, id), Catch::Contains("already holds a slot"));

  IndividualRecord cr = fake_record(id, uniform(0, 1), 9);
  cr.test_accuracy = uniform(0, 1);
  write_fake_child(c, id, 9, true);
  const std::string cid = c.id;
  pop.publish(std::move(c), cr);
  const auto child = pop.read(cid);
  REQUIRE(child);
  CHECK(child->parent == id);
  CHECK(child->test_accuracy == cr.test_accuracy);
  CHECK(json_file(run + "/alive/" + cid + "/slot.json")->at("victim") == id);

  Population::Staging late = pop.begin_child();
  CHECK_FALSE(pop.kill(late, id));  // already dead
  CHECK_FALSE(pop.kill(late, "1-nobody-1-1"));
  REQUIRE_THROWS_AS(pop.kill(late, "../alive"), Error);
  pop.abandon(std::move(late));

  const std::vector<IndividualRecord> all = pop.all_individuals();
  REQUIRE(all.size() == 2);
  CHECK(all[0].id == cid);  // alive first
  CHECK(all[1].id == id);
  require_consistent(inspect(run, 3));
}

TEST_CASE("publish refuses a child without a slot or without its files", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 2;
  o.durable = false;
  Population pop(run, o);

  Population::Staging s = pop.begin_child();
  write_fake_child(s, "", 4, true);
  REQUIRE_THROWS_WITH(pop.publish(std::move(s), fake_record("", 0.5, 4)),
                      Catch::Contains("holds no slot"));
  CHECK(s.open());  // still ours: take a slot and try again
  REQUIRE(pop.take_free_slot(s) != FreeSlot::kNone);
  REQUIRE_THROWS_WITH(pop.take_free_slot(s), Catch::Contains("already holds a slot"));
  fs::remove(s.dna_path());
  REQUIRE_THROWS_WITH(pop.publish(std::move(s), fake_record("", 0.5, 4)),
                      Catch::Contains("dna.json is missing"));
  fs::remove(s.weights_path());
  write_fake_child(s, "", 4, false);
  REQUIRE_THROWS_WITH(pop.publish(std::move(s), fake_record("", 0.5, 4)),
                      Catch::Contains("weights.evow is missing"));

  // A failed child needs no weights and joins alive/ with fitness 0.
  IndividualRecord failed = fake_record("", 0, 4);
  failed.failed = true;
  failed.failure = "loss is NaN at step 1200";
  const std::string id = s.id;
  pop.publish(std::move(s), failed);
  const auto back = pop.read(id);
  REQUIRE(back);
  CHECK(back->failed);
  CHECK(back->failure == failed.failure);
  CHECK(back->fitness == 0);
  REQUIRE_THROWS_WITH(pop.publish(std::move(s), failed), Catch::Contains("already published"));
}

TEST_CASE("abandon and the destructor give the slot back; a victim stays dead", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 3;
  o.durable = false;
  Population pop(run, o);
  const std::string first = publish_initial(pop, 0.3);
  CHECK(pop.free_count() == 2);
  {
    Population::Staging s = pop.begin_child();
    REQUIRE(pop.take_free_slot(s) == FreeSlot::kInitial);
    CHECK(pop.free_count() == 1);
  }  // destroyed while open
  CHECK(pop.free_count() == 2);
  CHECK(pop.census().staging == 0);

  Population::Staging k = pop.begin_child();
  REQUIRE(pop.kill(k, first));
  pop.abandon(std::move(k));
  CHECK(pop.free_count() == 3);
  CHECK(pop.alive_ids().empty());
  CHECK(pop.dead_count() == 1);

  // The returned slot says so: fill it with a child of a random parent, not an initial one.
  int initial = 0, returned = 0;
  for (int i = 0; i < 3; ++i) {
    Population::Staging s = pop.begin_child();
    const FreeSlot f = pop.take_free_slot(s);
    initial += f == FreeSlot::kInitial;
    returned += f == FreeSlot::kReturned;
    write_fake_child(s, "", 4, true);
    pop.publish(std::move(s), fake_record("", 0.5, 4));
  }
  CHECK(initial == 2);
  CHECK(returned == 1);
  Population::Staging none = pop.begin_child();
  CHECK(pop.take_free_slot(none) == FreeSlot::kNone);
  pop.abandon(std::move(none));
  require_consistent(inspect(run, 3));
}

TEST_CASE("workers racing to kill one individual: exactly one kill happens", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 60;
  o.durable = false;
  Population pop(run, o);
  constexpr int kRacers = 4;
  for (int round = 0; round < 40; ++round) {
    const std::string victim = publish_initial(pop, uniform(0, 1));
    std::vector<Population::Staging> children;
    for (int t = 0; t < kRacers; ++t) children.push_back(pop.begin_child());
    std::atomic<int> ready{0};
    std::vector<int> won(kRacers, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < kRacers; ++t)
      threads.emplace_back([&, t] {
        ++ready;
        while (ready < kRacers) std::this_thread::yield();  // start together
        won[std::size_t(t)] = pop.kill(children[std::size_t(t)], victim);
      });
    for (auto& t : threads) t.join();
    int winners = 0;
    for (int t = 0; t < kRacers; ++t) {
      winners += won[std::size_t(t)];
      // Losers hold nothing and go on: they may still take a slot.
      CHECK(fs::exists(children[std::size_t(t)].dir + "/slot.json") == bool(won[std::size_t(t)]));
    }
    REQUIRE(winners == 1);
    const auto dead = pop.read(victim);
    REQUIRE(dead);
    CHECK_FALSE(dead->alive());
    for (int t = 0; t < kRacers; ++t)
      if (won[std::size_t(t)]) CHECK(dead->killed_by == children[std::size_t(t)].id);
    for (auto& c : children) pop.abandon(std::move(c));
  }
  require_consistent(inspect(run, 60));
}

TEST_CASE("listings race with kills and publishes: only complete individuals are seen",
          "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 8;
  o.durable = false;
  Population pop(run, o);
  std::atomic<bool> stop{false};
  Tally tally;
  std::thread writer([&] { fake_worker(pop, stop, test::rng()(), tally); });
  std::set<std::string> listed;
  std::size_t reads = 0, misses = 0;
  const auto end = Clock::now() + std::chrono::milliseconds(700);
  while (Clock::now() < end) {
    const std::vector<std::string> ids = pop.alive_ids();
    for (const std::string& id : ids) {
      listed.insert(id);
      const auto r = pop.read(id);  // throws if it finds a damaged record
      ++reads;
      if (!r) {
        ++misses;  // caught between alive/ and dead/ by a kill
        continue;
      }
      CHECK(r->id == id);
    }
  }
  stop = true;
  writer.join();
  INFO(reads << " reads, " << misses << " misses, " << tally.published.size() << " published");
  CHECK(tally.published.size() > 20);
  const std::set<std::string> published(tally.published.begin(), tally.published.end());
  for (const std::string& id : listed) CHECK(published.count(id));  // never a staging folder
  CHECK(misses * 4 <= reads);  // a read misses only inside a kill's two renames
  require_consistent(inspect(run, 8));
}

// A process that dies at a chosen step of the protocol, leaving what a kill -9 would.
enum class DieAt { kEmpty, kHoldingFreeSlot, kAfterKill, kMidKill };

TEST_CASE("recover discards the children of dead processes and frees their slots", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 6;
  o.durable = false;
  Population pop(run, o);
  std::vector<std::string> victims;
  for (int i = 0; i < 2; ++i) victims.push_back(publish_initial(pop, 0.5));
  Population::Staging mine = pop.begin_child();  // a live worker's child: recovery leaves it be

  std::vector<std::string> orphans;
  for (DieAt at : {DieAt::kEmpty, DieAt::kHoldingFreeSlot, DieAt::kAfterKill, DieAt::kMidKill}) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      Population p(run);
      Population::Staging s = p.begin_child();
      if (at == DieAt::kHoldingFreeSlot && p.take_free_slot(s) == FreeSlot::kNone) ::_exit(3);
      if (at == DieAt::kAfterKill && !p.kill(s, victims[0])) ::_exit(4);
      if (at == DieAt::kMidKill &&  // the kill's rename done, nothing after it
          ::rename((run + "/alive/" + victims[1]).c_str(),
                   (s.dir + "/victim-" + victims[1]).c_str()))
        ::_exit(5);
      write_fake_child(s, "", 4, true);
      const std::string line = s.id + "\n";
      if (::write(fds[1], line.data(), line.size()) != ssize_t(line.size())) ::_exit(6);
      ::_exit(0);  // no destructors: as if killed
    }
    ::close(fds[1]);
    char buf[256] = {};
    const ssize_t got = ::read(fds[0], buf, sizeof buf - 1);
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(exit_code(status) == 0);
    REQUIRE(got > 1);
    orphans.push_back(std::string(buf, std::size_t(got - 1)));
  }
  CHECK(pop.census().staging == 5);
  CHECK(pop.census().held == 3);
  CHECK(pop.free_count() == 3);
  require_consistent(inspect(run, 6));

  CHECK(pop.recover(3600) == 4);
  const Population::Census c = pop.census();
  CHECK(c.staging == 1);  // ours
  CHECK(fs::exists(mine.dir));
  CHECK(c.free == 6);  // the 3 free + the 3 held slots (both victims are dead now)
  CHECK(c.alive == 0);
  for (std::size_t i = 0; i < victims.size(); ++i) {
    const auto r = pop.read(victims[i]);
    REQUIRE(r);
    CHECK_FALSE(r->alive());
    CHECK(r->killed_by == orphans[i + 2]);
  }
  for (const std::string& id : orphans) CHECK_FALSE(pop.read(id));  // discarded, never alive
  CHECK(pop.recover(3600) == 0);
  require_consistent(inspect(run, 6));
}

TEST_CASE("recover judges workers on other machines by their heartbeat, and pids by start time",
          "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 4;
  o.durable = false;
  Population pop(run, o);
  auto pretend = [&](const Population::Staging& s, const std::string& host, int pid, uint64_t start,
                     double age) {
    nlohmann::json owner = *json_file(s.dir + "/owner.json");
    owner["host"] = host;
    owner["pid"] = pid;
    owner["start"] = start;
    std::ofstream(s.dir + "/owner.json") << owner.dump();
    timespec times[2];
    ::clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= time_t(age);
    times[1] = times[0];
    REQUIRE(::utimensat(AT_FDCWD, s.dir.c_str(), times, 0) == 0);
  };
  Population::Staging silent = pop.begin_child(), beating = pop.begin_child(),
                      reused = pop.begin_child();
  REQUIRE(pop.take_free_slot(silent) != FreeSlot::kNone);
  REQUIRE(pop.take_free_slot(beating) != FreeSlot::kNone);
  REQUIRE(pop.take_free_slot(reused) != FreeSlot::kNone);
  pretend(silent, "elsewhere", 1234, 5, 1000);
  pretend(beating, "elsewhere", 1234, 5, 1000);
  pop.heartbeat(beating);
  // Our own host and boot, our parent's pid, but not its start time: the pid was reused.
  const nlohmann::json me = *json_file(reused.dir + "/owner.json");
  pretend(reused, me.at("host").get<std::string>(), int(::getppid()), uint64_t(1) << 60, 0);

  CHECK(pop.recover(600) == 2);
  CHECK_FALSE(fs::exists(silent.dir));
  CHECK(fs::exists(beating.dir));
  CHECK_FALSE(fs::exists(reused.dir));
  CHECK(pop.free_count() == 3);
  // The silent worker learns it was given up on when it publishes; its slot is free already.
  write_fake_child(silent, "", 4, true);
  REQUIRE_THROWS_WITH(pop.publish(std::move(silent), fake_record("", 0.5, 4)),
                      Catch::Contains("is gone"));
  REQUIRE_THROWS_WITH(pop.heartbeat(reused), Catch::Contains("is gone"));
  CHECK(pop.free_count() == 3);
  require_consistent(inspect(run, 4));
}

TEST_CASE("claim_final: one holder; a live one is respected, a dead or older one replaced",
          "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 2;
  o.durable = false;
  Population pop(run, o);
  const std::string claim = run + "/final.claim";
  using C = Population::FinalClaim;
  std::string holder;
  const double t0 = 1.7e9;

  // Another process (a fork, alive while it waits on a pipe) claims first: we are refused, as a
  // process on another machine is while its claim has a heartbeat.
  int fds[2], done_fds[2];
  REQUIRE(::pipe(fds) == 0);
  REQUIRE(::pipe(done_fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    Population p(run);
    std::string h;
    const bool won = p.claim_final(t0, 600, &h) == C::kClaimed;
    const char c = won ? 'y' : 'n';
    if (::write(fds[1], &c, 1) != 1) ::_exit(6);
    char wait = 0;
    if (::read(done_fds[0], &wait, 1) != 1) ::_exit(7);  // until the parent has looked
    if (wait == 'f') p.finish_final();
    ::_exit(0);  // no destructors: as if it ended here
  }
  ::close(fds[1]);
  ::close(done_fds[0]);
  char won = 0;
  REQUIRE(::read(fds[0], &won, 1) == 1);
  REQUIRE(won == 'y');
  CHECK(pop.claim_final(t0, 600, &holder) == C::kHeld);
  CHECK(holder.find("pid " + std::to_string(pid)) != std::string::npos);
  // It finishes: a search that began before that (t0) skips its own final phase; it reads as
  // done, not held, though the process is still there.
  REQUIRE(::write(done_fds[1], "f", 1) == 1);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(exit_code(status) == 0);
  CHECK(fs::exists(claim + "/done.json"));
  CHECK(pop.claim_final(t0, 600, &holder) == C::kDone);
  // A search that began after it (a resume of the finished run) replaces it and holds it.
  const double later = json_file(claim + "/done.json")->at("finished").get<double>() + 1;
  CHECK(pop.claim_final(later, 600, &holder) == C::kClaimed);
  CHECK(json_file(claim + "/owner.json")->at("pid") == int(::getpid()));
  CHECK_FALSE(fs::exists(claim + "/done.json"));
  CHECK(pop.heartbeat_final());

  // A holder that died mid-phase (its pid gone; the fork above has exited) is replaced.
  nlohmann::json owner = *json_file(claim + "/owner.json");
  owner["pid"] = int(pid);
  std::ofstream(claim + "/owner.json") << owner.dump();
  CHECK(pop.claim_final(t0, 600, &holder) == C::kClaimed);
  CHECK(json_file(claim + "/owner.json")->at("pid") == int(::getpid()));
  // Elsewhere: judged by the claim's heartbeat (its folder's mtime) against stale_seconds.
  owner["host"] = "elsewhere";
  std::ofstream(claim + "/owner.json") << owner.dump();
  CHECK(pop.claim_final(t0, 600, &holder) == C::kHeld);
  CHECK(holder == "elsewhere pid " + std::to_string(pid));
  timespec times[2];
  ::clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= 1000;
  times[1] = times[0];
  REQUIRE(::utimensat(AT_FDCWD, claim.c_str(), times, 0) == 0);
  CHECK(pop.claim_final(t0, 600, &holder) == C::kClaimed);
  // Nothing of the replaced claims is left behind in staging/.
  for (const auto& e : fs::directory_iterator(run + "/staging"))
    CHECK(e.path().filename().string().rfind(".trash-", 0) != 0);
  // Many threads claiming a free claim at once: exactly one wins.
  fs::remove_all(claim);
  std::atomic<int> winners{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      Population p(run);
      std::string h;
      if (p.claim_final(t0, 600, &h) == C::kClaimed) ++winners;
    });
  for (std::thread& t : threads) t.join();
  CHECK(winners == 1);
  require_consistent(inspect(run, 2));
}

TEST_CASE("collect_garbage removes dead weights after the grace period", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 3;
  o.durable = false;
  Population pop(run, o);
  const std::string a = publish_initial(pop, 0.2), b = publish_initial(pop, 0.8);
  Population::Staging c = pop.begin_child();
  REQUIRE(pop.kill(c, a));
  pop.abandon(std::move(c));
  CHECK(pop.collect_garbage(600) == 0);  // killed just now: a worker may still load it
  CHECK(fs::exists(pop.weights_path(a)));
  CHECK(pop.collect_garbage(0) == 1);
  CHECK_FALSE(fs::exists(run + "/dead/" + a + "/weights.evow"));
  CHECK(fs::exists(run + "/alive/" + b + "/weights.evow"));  // the living keep theirs
  const auto r = pop.read(a);
  REQUIRE(r);  // kept for lineage
  CHECK_FALSE(r->alive());
  CHECK(pop.collect_garbage(0) == 0);
  require_consistent(inspect(run, 3));
}

// ---- many processes -----------------------------------------------------------------------------

TEST_CASE(
    "4 processes x 2 workers with a fake trainer: nothing lost or duplicated, the size in "
    "its bounds",
    "[population][stress]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  constexpr int kN = 24, kProcesses = 4, kThreads = 2, kWorkers = kProcesses * kThreads;
  constexpr double kSeconds = 3.0;
  Processes procs;
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (int p = 0; p < kProcesses; ++p) {  // they race to create the run, too
    logs.push_back(tmp.path + "/log" + std::to_string(p));
    pids.push_back(spawn_search(procs, run, kN, kThreads, kSeconds, logs.back(), false));
  }
  // Freeze every process at random moments: with all of them stopped the folder is quiescent
  // and the invariants must hold exactly.
  std::vector<bool> running(kProcesses, true);
  std::vector<int> statuses(kProcesses, 0);
  int samples = 0;
  std::size_t min_alive = kN, max_alive = 0;
  const auto start = Clock::now();
  while (Clock::now() - start < std::chrono::duration<double>(kSeconds - 0.4)) {
    sleep_seconds(uniform(0.05, 0.3));
    for (int p = 0; p < kProcesses; ++p)
      if (running[std::size_t(p)])
        running[std::size_t(p)] =
            stop_process(procs, pids[std::size_t(p)], &statuses[std::size_t(p)]);
    if (fs::exists(run + "/run.json")) {
      const Inspection in = inspect(run, kN);
      require_consistent(in);
      CHECK(in.alive.size() <= std::size_t(kN));
      CHECK(in.held <= std::size_t(kWorkers));
      CHECK(in.staging.size() <= std::size_t(kWorkers));
      if (in.free == 0) {  // the initial population is complete: the steady state's bound
        CHECK(in.alive.size() >= std::size_t(kN - kWorkers));
        min_alive = std::min(min_alive, in.alive.size());
        max_alive = std::max(max_alive, in.alive.size());
      }
      ++samples;
    }
    for (int p = 0; p < kProcesses; ++p)
      if (running[std::size_t(p)]) ::kill(pids[std::size_t(p)], SIGCONT);
  }
  for (int p = 0; p < kProcesses; ++p) {
    const int code = running[std::size_t(p)] ? wait_exit(procs, pids[std::size_t(p)])
                                             : exit_code(statuses[std::size_t(p)]);
    CHECK(code == 0);
  }
  CHECK(samples >= 5);

  // The end: every process stopped cleanly, abandoning its children in flight.
  const Inspection in = inspect(run, kN);
  require_consistent(in);
  CHECK(in.staging.empty());
  CHECK(in.alive.size() + in.free == std::size_t(kN));

  std::map<std::string, int> published, killed;
  std::map<std::string, std::string> killer;
  for (const std::string& log : logs) {
    std::istringstream lines(slurp(log));
    std::string kind, id, child;
    while (lines >> kind >> id) {
      if (kind == "P") {
        ++published[id];
      } else {
        lines >> child;
        ++killed[id];
        killer[id] = child;
      }
    }
  }
  INFO(published.size() << " published, " << killed.size() << " killed, " << samples
                        << " samples, alive in [" << min_alive << ", " << max_alive << "]");
  CHECK(published.size() > std::size_t(kN + 40));  // the steady state was reached, and ran
  CHECK(killed.size() > 40);
  CHECK(published.size() == in.alive.size() + in.dead.size());  // nothing lost, nothing extra
  CHECK(killed.size() == in.dead.size());
  for (const auto& [id, times] : published) {
    CHECK(times == 1);
    CHECK(in.alive.count(id) + in.dead.count(id) == 1);
  }
  for (const auto& [id, times] : killed) {
    CHECK(times == 1);  // no individual was killed by two workers
    CHECK(in.dead.count(id) == 1);
    CHECK(json_file(run + "/dead/" + id + "/death.json")->value("killed_by", "") == killer[id]);
  }
}

TEST_CASE(
    "kill -9 at random moments, then restart: the folder stays consistent and the search "
    "resumes",
    "[population][crash]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  constexpr int kN = 10, kThreads = 2, kKills = 24;
  const std::string nolog = tmp.path + "/unused-log";
  // Two processes at once, so that a survivor works beside the dead one's leftovers and a
  // restarted one recovers them while the survivor goes on.
  Processes procs;
  std::vector<pid_t> pids = {spawn_search(procs, run, kN, kThreads, 0, nolog, true),
                             spawn_search(procs, run, kN, kThreads, 0, nolog, false)};
  std::size_t leftovers = 0;
  for (int round = 0; round < kKills; ++round) {
    sleep_seconds(uniform(0.01, 0.15));
    const std::size_t victim = test::rng()() % 2, other = 1 - victim;
    ::kill(pids[victim], SIGKILL);
    CHECK(wait_exit(procs, pids[victim]) == 128 + SIGKILL);
    int status = 0;
    REQUIRE(stop_process(procs, pids[other], &status));
    if (fs::exists(run + "/run.json")) {
      const Inspection in = inspect(run, kN);
      require_consistent(in);
      leftovers += in.staging.size();
    }
    ::kill(pids[other], SIGCONT);
    pids[victim] = spawn_search(procs, run, kN, kThreads, 0, nolog, round % 2 == 0);
  }
  for (pid_t pid : pids) {
    ::kill(pid, SIGKILL);
    wait_exit(procs, pid);
  }
  CHECK(leftovers > 0);  // the kills did hit children in flight

  Population pop(run);
  const Inspection crashed = inspect(run, kN);
  require_consistent(crashed);
  const std::size_t recovered = pop.recover(3600);
  CHECK(recovered == crashed.staging.size());  // all their owners are dead
  const Inspection recovered_state = inspect(run, kN);
  require_consistent(recovered_state);
  CHECK(recovered_state.staging.empty());
  CHECK(recovered_state.alive.size() + recovered_state.free == std::size_t(kN));
  for (const std::string& id : crashed.staging)  // in-flight children are discarded
    CHECK((recovered_state.alive.count(id) + recovered_state.dead.count(id)) == 0);

  // Restart once more and let it run: it resumes from the folder.
  const std::size_t before = recovered_state.alive.size() + recovered_state.dead.size();
  const pid_t last = spawn_search(procs, run, kN, kThreads, 0.6, tmp.path + "/last-log", true);
  CHECK(wait_exit(procs, last) == 0);
  const Inspection after = inspect(run, kN);
  require_consistent(after);
  CHECK(after.staging.empty());
  CHECK(after.alive.size() + after.dead.size() > before + 10);
  for (const std::string& id : recovered_state.alive)  // the old population carried on
    CHECK(after.alive.count(id) + after.dead.count(id) == 1);
}

}  // namespace
}  // namespace evo

namespace evo {

// Files dropped into free/ by hand (a README, junk) are not slots: the population never grows
// past N. Only the store's own names count (init-NNNNNN.json, <unique id>.json).
TEST_CASE("junk in free/ is not a slot", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 2;
  o.durable = false;
  Population pop(run, o);
  for (const char* junk : {"README", "junk.json", "init-12.json", "1-x.json", "notes-1-2-3.json",
                           "init-000001.json.bak"})
    std::ofstream(run + "/free/" + junk) << "{\"slot\": \"x\", \"origin\": \"initial\"}\n";
  CHECK(pop.free_count() == 2);
  for (int i = 0; i < 2; ++i) publish_initial(pop, 0.5);
  Population::Staging s = pop.begin_child();
  CHECK(pop.take_free_slot(s) == FreeSlot::kNone);
  pop.abandon(std::move(s));
  CHECK(pop.alive_ids().size() == 2);
  CHECK(fs::exists(run + "/free/README"));  // left where the user put it
  // A returned slot (a unique id's name) is a slot.
  Population::Staging k = pop.begin_child();
  REQUIRE(pop.kill(k, pop.alive_ids().front()));
  pop.abandon(std::move(k));
  CHECK(pop.free_count() == 1);
}

// One truncated metrics.json must not stop a report or a search: readers leave it out and say
// which file; a search moves it to damaged/ through a kill, so its slot is refilled.
TEST_CASE("a damaged record is left out by readers and quarantined by a search", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 3;
  o.durable = false;
  Population pop(run, o);
  const std::string a = publish_initial(pop, 0.4), b = publish_initial(pop, 0.6),
                    c = publish_initial(pop, 0.5);
  Population::Staging k = pop.begin_child();
  REQUIRE(pop.kill(k, c));  // c is dead; damage its death.json too
  pop.abandon(std::move(k));
  const std::string metrics = run + "/alive/" + b + "/metrics.json";
  const std::string text = slurp(metrics);
  std::ofstream(metrics, std::ios::trunc) << text.substr(0, text.size() / 2);
  std::ofstream(run + "/dead/" + c + "/death.json", std::ios::trunc) << "{\"death_time\": ";

  std::vector<std::string> damaged;
  const std::vector<IndividualRecord> all = pop.all_individuals(&damaged);
  REQUIRE(all.size() == 1);
  CHECK(all[0].id == a);
  REQUIRE(damaged.size() == 2);
  CHECK(damaged[0].find(metrics) != std::string::npos);
  CHECK(damaged[1].find(c) != std::string::npos);
  CHECK(pop.all_individuals().size() == 1);  // without the list, too

  const std::vector<std::string> moved = pop.quarantine_damaged();
  REQUIRE(moved.size() == 1);
  CHECK(moved[0].rfind(b + ": ", 0) == 0);
  CHECK(fs::exists(run + "/damaged/" + b + "/metrics.json"));
  CHECK(pop.alive_ids() == std::vector<std::string>{a});
  CHECK(pop.free_count() == 2);  // c's slot and b's: both refilled by the next children
  CHECK(pop.quarantine_damaged().empty());
}

// A creator killed half-way leaves RUN.creating-*: the next creation of a run there removes it
// once it is old, and leaves a recent one (its creator may still be at work).
TEST_CASE("stale RUN.creating-* folders are removed", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  const std::string old_one = run + ".creating-1-x-1-1", new_one = run + ".creating-2-x-2-2";
  fs::create_directories(old_one + "/free");
  fs::create_directories(new_one);
  const auto hour_ago = fs::file_time_type::clock::now() - std::chrono::hours(1);
  fs::last_write_time(old_one, hour_ago);
  PopulationOptions o;
  o.size = 2;
  o.durable = false;
  Population pop(run, o);
  CHECK(!fs::exists(old_one));
  CHECK(fs::exists(new_one));
}

}  // namespace evo

namespace evo {

// Links planted in a run folder are not individuals: a kill never writes through them, garbage
// collection never deletes through them (issue: nothing outside the run folder is touched).
TEST_CASE("symbolic links in a run folder are never followed", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run", outside = tmp.path + "/outside";
  fs::create_directories(outside);
  std::ofstream(outside + "/weights.evow") << "precious";
  std::ofstream(outside + "/metrics.json") << "{\"fitness\": 1}";
  PopulationOptions o;
  o.size = 2;
  o.durable = false;
  Population pop(run, o);
  const std::string a = publish_initial(pop, 0.5);
  publish_initial(pop, 0.6);
  fs::create_directory_symlink(outside, run + "/alive/1000000000000-evil-1-1");
  fs::create_directory_symlink(outside, run + "/dead/1000000000000-evil-1-2");
  fs::create_symlink(outside + "/weights.evow", run + "/free/init-000099.json");
  CHECK(pop.alive_ids().size() == 2);
  CHECK(pop.dead_count() == 0);
  CHECK(pop.free_count() == 0);
  // Kill everything the listing offers, then collect garbage with no grace: outside is intact.
  for (const std::string& id : pop.alive_ids()) {
    Population::Staging k = pop.begin_child();
    REQUIRE(pop.kill(k, id));
    pop.abandon(std::move(k));
  }
  pop.collect_garbage(0);
  CHECK(slurp(outside + "/weights.evow") == "precious");
  CHECK(!fs::exists(outside + "/death.json"));
  CHECK(fs::is_symlink(run + "/alive/1000000000000-evil-1-1"));
  (void)a;
}

}  // namespace evo

namespace evo {

// A record nested 100,000 levels deep (whose type error used to print the value and overflow the
// stack), or linked to a device, is a damaged record like any other: named, left out.
TEST_CASE("hostile record files are damaged records, not crashes", "[population]") {
  TempDir tmp;
  const std::string run = tmp.path + "/run";
  PopulationOptions o;
  o.size = 3;
  o.durable = false;
  Population pop(run, o);
  const std::string a = publish_initial(pop, 0.4), b = publish_initial(pop, 0.6),
                    c = publish_initial(pop, 0.5);
  std::ofstream(run + "/alive/" + b + "/metrics.json", std::ios::trunc)
      << "{\"fitness\":" << std::string(100000, '[') << std::string(100000, ']') << "}";
  fs::remove(run + "/alive/" + c + "/metrics.json");
  fs::create_symlink("/dev/zero", run + "/alive/" + c + "/metrics.json");
  std::vector<std::string> damaged;
  const std::vector<IndividualRecord> all = pop.all_individuals(&damaged);
  REQUIRE(all.size() == 1);
  CHECK(all[0].id == a);
  REQUIRE(damaged.size() == 2);
  CHECK(damaged[0].find("nested more than 64") != std::string::npos);
}

}  // namespace evo

namespace evo {

// A count far outside int64_t (steps 4.4e71, params -1): an error naming the field, not an
// undefined conversion (found by the record fuzzer).
TEST_CASE("record counts outside their range are errors", "[population]") {
  for (const char* bad : {R"({"steps": 4.4e71})", R"({"params": -1})", R"({"params": 1e300})"}) {
    INFO(bad);
    CHECK_THROWS_WITH(record_from_json(nlohmann::json::parse(bad), "m.json"),
                      Catch::Contains("m.json") && Catch::Contains("count"));
  }
  CHECK(record_from_json(nlohmann::json::parse(R"({"steps": 1000, "params": 7811})"), "m.json")
            .params == 7811);
}

}  // namespace evo
