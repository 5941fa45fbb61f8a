// The search loop: each worker thread repeatedly selects, mutates, trains and publishes a child;
// the population lives only in the run folder, so processes on many machines cooperate lock-free.
// Not the store's file protocol (population.cpp), not the mutations (mutation.cpp), and no
// console: what happens goes to the caller's SearchObserver (search.h).
#include "evo/search.h"
#include "evo/io.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "evo/backend.h"
#include "evo/data.h"
#include "evo/dna.h"
#include "evo/mutation.h"
#include "evo/population.h"
#include "evo/report.h"
#include "evo/train.h"
#include "final.h"

namespace evo {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The machine a record names: EVO_HOST when set (the store judges such a process as its own
// machine: docs/slurm.md), else the host name.
std::string host_name() {
  if (const char* as = std::getenv("EVO_HOST"); as && *as) return std::string(as).substr(0, 64);
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

// Everything that must agree between the processes sharing a run folder; the store's one warning
// goes to `warn`.
PopulationOptions population_options(const SearchOptions& o,
                                     std::function<void(const std::string&)> warn) {
  PopulationOptions p;
  p.on_warning = std::move(warn);
  p.size = o.population;
  p.settings = {{"data", o.data},
                {"steps", o.steps},
                {"batch", o.batch},
                {"augment", o.augment},
                {"selection", o.selection == Selection::Tournament ? "tournament" : "aging"},
                {"sample_size", o.sample_size},
                {"inheritance", to_string(o.inheritance)},
                {"val_fraction", o.val_fraction},
                {"seed", o.seed},
                {"lr_schedule", to_string(o.lr_schedule)},
                {"fit_filters", o.fit_filters},
                {"cost_tie_points", 100 * o.cost_tie},
                {"final_share", o.final_share},
                {"final_top", o.final_top},
                {"final_width", o.final_width > 0 ? nlohmann::json(o.final_width)
                                                  : nlohmann::json("auto")},
                {"final_epochs", o.final_epochs},
                {"final_augment", o.final_augment == 2   ? "on"
                                  : o.final_augment == 1 ? "flips"
                                                         : "off"}};
  // Only when set: runs made before the limits existed (no key) resume as they were.
  if (o.max_params > 0) p.settings["max_params"] = o.max_params;
  // A capped training set also chooses the standardisation's mean and std (load_dataset computes
  // them on the images trained on), so evo best and evo export need the cap to see what the
  // children saw.
  if (o.max_train > 0) p.settings["max_train"] = o.max_train;
  if (o.max_flops > 0) p.settings["max_flops"] = o.max_flops;
  // Recorded, never compared: how long the run was meant to take when it was created (seconds;
  // 0: no limit), for the report and evo best. A resume may give itself another limit.
  p.recorded = {{"time_limit", o.time_limit}, {"max_children", o.max_children}};
  return p;
}

// What every worker of this process shares: the data (one device copy per device), the counters
// and the observer.
struct Shared {
  const SearchOptions& opts;
  const std::atomic<bool>& user_stop;
  SearchObserver& observer;
  std::atomic<bool> stop{false};
  std::mutex mutex;  // the observer's calls (one at a time), and children .. last_summary below
  Population population;
  Dataset data;
  std::map<std::string, std::unique_ptr<DeviceDataset>> device_data;  // by device name
  int children = 0, failed = 0, reserved = 0;
  // Reservations that ended for good (published, or could not be published); reserved - finished
  // are in flight, and may yet come back (unreserve) when their worker stops on a broken GPU.
  int finished = 0;
  std::condition_variable budget_changed;
  std::set<std::string> broken_devices;  // whose worker stopped on a sticky error (under mutex)
  std::atomic<int64_t> redrawn{0};  // mutations drawn again for the size limits
  double best_val = 0;
  double best_time = now_seconds();  // when best_val last rose: the summary shows stagnation
  double start = now_seconds();
  double last_summary = now_seconds();
  std::string host = host_name();
  // What an alive individual's record says does not change until it dies (then it leaves
  // alive/), so each is read from the folder once: on NFS a population of 1000 would otherwise
  // cost a thousand file reads per aging selection.
  std::mutex records_mutex;
  std::unordered_map<std::string, IndividualRecord> records;

  Shared(const SearchOptions& o, const std::atomic<bool>& s, SearchObserver& obs)
      : opts(o),
        user_stop(s),
        observer(obs),
        population(o.run_dir, population_options(o, [this](const std::string& line) {
                     warn(line);
                   })) {}

  bool stopping() const { return stop.load() || user_stop.load(); }

  // Never called with `mutex` held (it takes it, so that observer calls never overlap).
  void warn(const std::string& line) {
    std::lock_guard<std::mutex> lock(mutex);
    observer.warning(line);
  }

  // Reserves one child of the --max-children budget; false when it is spent. While the budget is
  // all reserved but some children are still in flight, waits: a worker that stops on a broken
  // GPU gives its child back (unreserve), and another worker must be there to train it, or the
  // run would end one child short with a slot of the population empty.
  bool reserve_child() {
    std::unique_lock<std::mutex> lock(mutex);
    while (opts.max_children > 0 && reserved >= opts.max_children) {
      if (finished >= reserved || stopping()) return false;
      budget_changed.wait_for(lock, std::chrono::milliseconds(200));
    }
    ++reserved;
    return true;
  }
  void unreserve() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      --reserved;
    }
    budget_changed.notify_all();
  }
  // A reserved child ended for good (published, or lost).
  void finish_child() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++finished;
    }
    budget_changed.notify_all();
  }
};

// The record of an individual listed alive, from the cache or the folder; nullopt when it died
// (and moved) since the listing.
std::optional<IndividualRecord> alive_record(Shared& sh, const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(sh.records_mutex);
    if (auto it = sh.records.find(id); it != sh.records.end()) return it->second;
  }
  std::optional<IndividualRecord> r = sh.population.read(id);
  if (!r || !r->alive()) return std::nullopt;
  std::lock_guard<std::mutex> lock(sh.records_mutex);
  sh.records.emplace(id, *r);
  return r;
}

// Drops cached records of individuals no longer in `alive` (sorted).
void forget_dead(Shared& sh, const std::vector<std::string>& alive) {
  std::lock_guard<std::mutex> lock(sh.records_mutex);
  if (sh.records.size() <= 2 * alive.size() + 16) return;
  for (auto it = sh.records.begin(); it != sh.records.end();)
    it = std::binary_search(alive.begin(), alive.end(), it->first) ? std::next(it)
                                                                   : sh.records.erase(it);
}

struct Parent {
  IndividualRecord record;
  Dna dna;
  std::string weights_path;
};

// Reads the parent's DNA; nullopt when it vanished (killed and moved) in the meantime.
std::optional<Parent> load_parent(Shared& sh, const IndividualRecord& r) {
  Parent p;
  p.record = r;
  try {
    p.dna = load_dna(sh.population.dna_path(r.id));
  } catch (const Error&) {
    return std::nullopt;
  }
  p.weights_path = r.failed ? "" : sh.population.weights_path(r.id);
  return p;
}

// Tournament (the paper): sample two, kill the worse at once (its slot goes to our child), the
// better is the parent. Aging (Real et al. 2019): sample S, the best is the parent, the oldest of
// the population dies. Another worker may kill a sampled individual first: then sample again.
// With `kill` false the same selection chooses the parent and nobody dies: that fills a slot an
// abandoned child gave back (its tournament's loser already died when the slot was taken), so
// every child of a run, resumed or not, has a parent chosen by selection.
std::optional<Parent> select_parent(Shared& sh, std::mt19937_64& rng,
                                    Population::Staging& child, bool kill) {
  const SearchOptions& o = sh.opts;
  for (int attempt = 0; attempt < 100 && !sh.stopping(); ++attempt) {
    std::vector<std::string> ids = sh.population.alive_ids();
    const std::size_t least = kill ? 2 : 1;  // a refill may choose the one survivor
    if (ids.size() < least) return std::nullopt;
    std::sort(ids.begin(), ids.end());
    forget_dead(sh, ids);
    std::vector<IndividualRecord> alive;  // aging: all of them, for the oldest
    if (o.selection == Selection::Aging)
      for (const std::string& id : ids)
        if (auto r = alive_record(sh, id)) alive.push_back(std::move(*r));
    std::shuffle(ids.begin(), ids.end(), rng);
    const std::size_t want = std::min<std::size_t>(std::max(2, o.sample_size), ids.size());
    std::vector<IndividualRecord> sample;
    for (const std::string& id : ids) {
      if (sample.size() == want) break;
      if (auto r = alive_record(sh, id)) sample.push_back(*r);
    }
    if (sample.size() < least) continue;
    // Ties are broken at random (by the shuffle), which the paper's "lower fitness" leaves open.
    std::stable_sort(sample.begin(), sample.end(),
                     [](const auto& a, const auto& b) { return a.fitness > b.fitness; });
    // --cost-tie: of those within the margin of the best, the cheapest to train per step moves to
    // the front and is the parent; the others keep their order, so a two-way tournament's loser
    // is then the costlier of the two.
    if (o.cost_tie > 0) {
      const auto per_step = [](const IndividualRecord& r) {
        return r.steps > 0 && std::isfinite(r.flops) ? r.flops / r.steps : INFINITY;
      };
      std::size_t cheapest = 0;
      for (std::size_t i = 1; i < sample.size(); ++i)
        if (sample[0].fitness - sample[i].fitness <= o.cost_tie &&
            per_step(sample[i]) < per_step(sample[cheapest]))
          cheapest = i;
      std::rotate(sample.begin(), sample.begin() + std::ptrdiff_t(cheapest),
                  sample.begin() + std::ptrdiff_t(cheapest) + 1);
    }
    std::string victim = sample.back().id;
    if (o.selection == Selection::Aging) {
      double oldest = INFINITY;
      for (const IndividualRecord& r : alive)
        if (r.id != sample[0].id && r.birth_time < oldest) {
          oldest = r.birth_time;
          victim = r.id;
        }
    }
    auto parent = load_parent(sh, sample.front());
    if (!parent) continue;
    if (kill && !sh.population.kill(child, victim)) continue;  // lost a race for the victim
    return parent;
  }
  return std::nullopt;
}

// ---- size limits ---------------------------------------------------------------------------
// --max-params / --max-flops: a child over a limit is never trained. Its mutation is drawn again
// rather than recorded as a failure with fitness 0, because a failed child would still take a
// slot and a tournament; redrawing costs a compile (microseconds) and leaves selection as the
// paper has it among the children that can exist. After kLimitRedraws draws over the limits the
// child is the parent unchanged (IDENTITY), which is within them as every individual is.
constexpr int kLimitRedraws = 50;

// A mutated child and, when the size limits compiled it, its plan: the worker trains that plan
// instead of compiling the child a second time.
struct LimitedChild {
  MutationResult mutation;
  std::optional<CompiledDna> plan;
};

// Why `dna` is over a limit ("" when it is within them, or when it does not compile at all:
// training reports that as a failure, as without limits). `plan` gets the compiled DNA when it
// compiles.
std::string over_limits(const Shared& sh, const Dna& dna, std::optional<CompiledDna>& plan,
                        int parent_misfits) {
  const SearchOptions& o = sh.opts;
  plan.reset();
  if (o.max_params <= 0 && o.max_flops <= 0 && !o.fit_filters) return "";
  try {
    plan = compile(dna, sh.data.train.h, sh.data.train.w, sh.data.train.c, sh.data.classes);
    if (o.fit_filters && misfit_convs(*plan) > parent_misfits)
      return "a convolution misfits its map (--fit-filters)";
    if (o.max_params > 0 && plan->param_count > o.max_params)
      return std::to_string(plan->param_count) + " parameters > --max-params " +
             std::to_string(o.max_params);
    if (o.max_flops > 0 && plan->forward_flops > o.max_flops)
      return std::to_string(int64_t(plan->forward_flops)) + " FLOPs > --max-flops " +
             std::to_string(int64_t(o.max_flops));
  } catch (const Error&) {
  }
  return "";
}

LimitedChild mutate_within_limits(Shared& sh, const Dna& parent, std::mt19937_64& rng) {
  LimitedChild c;
  // A parent that misfits already (a run resumed from before --fit-filters) may keep its misfits,
  // not add to them.
  int parent_misfits = 0;
  if (sh.opts.fit_filters) {
    try {
      parent_misfits = misfit_convs(
          compile(parent, sh.data.train.h, sh.data.train.w, sh.data.train.c, sh.data.classes));
    } catch (const Error&) {
    }
  }
  for (int draw = 0; draw < kLimitRedraws; ++draw) {
    c.mutation = mutate(parent, rng);
    if (over_limits(sh, c.mutation.child, c.plan, parent_misfits).empty()) {
      if (draw > 0)
        c.mutation.detail += " (" + std::to_string(draw) + " mutation" + (draw == 1 ? "" : "s") +
                             " over the size limits drawn again)";
      sh.redrawn += draw;
      return c;
    }
  }
  sh.redrawn += kLimitRedraws;
  c.plan.reset();
  c.mutation = apply_mutation(parent, Mutation::Identity, rng);
  c.mutation.detail += " (" + std::to_string(kLimitRedraws) + " mutations over the size limits: "
                       "the parent unchanged)";
  return c;
}

void log_child(Shared& sh, const std::string& worker, const IndividualRecord& r) {
  bool refresh = false;
  {
    std::lock_guard<std::mutex> lock(sh.mutex);
    if (r.failed)
      ++sh.failed;
    else
      ++sh.children;
    if (r.fitness > sh.best_val) {
      sh.best_val = r.fitness;
      sh.best_time = now_seconds();
    }
    sh.observer.child_done({now_seconds() - sh.start, worker, r, sh.best_val});
    const double t = now_seconds();
    if (t - sh.last_summary >= sh.opts.summary_every) {
      sh.last_summary = t;
      sh.observer.progress({t - sh.start, sh.children, sh.failed,
                            sh.population.alive_ids().size(), sh.best_val, t - sh.best_time});
      refresh = true;
    }
  }
  // With every summary the report and trials.csv are written again, so that a run can be watched
  // in a browser while it goes on. Outside the lock: the other workers publish meanwhile (the
  // report reads the folder as any reader does). Napkin math: ~1,000 records of ~1 KB read and a
  // page drawn, ~0.1-0.5 s of one worker every 5 minutes, 0.1% of the run.
  if (refresh) {
    try {
      (void)write_report(sh.opts.run_dir, sh.opts.report);
    } catch (const std::exception& e) {
      sh.warn(std::string("evo search: the report was not refreshed (the search goes on): ") +
              e.what());
    }
  }
}

// One child's share of the --max-children budget, held by its worker from reserve_child() until
// the child is published (finish) or not (give_back, also on the way out of an exception).
class Reservation {
 public:
  explicit Reservation(Shared& sh) : sh_(sh) {}
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { give_back(); }
  void give_back() {
    if (open_) sh_.unreserve();
    open_ = false;
  }
  void finish() {
    if (open_) sh_.finish_child();
    open_ = false;
  }

 private:
  Shared& sh_;
  bool open_ = true;
};

// Failures in a row after which a worker waits before its next child (doubling from 1 s).
constexpr int kFailuresBeforeBackoff = 3;

// Thrown by a worker that must stop (its device is broken): the message says why, for people.
class WorkerStopped : public Error {
 public:
  using Error::Error;
};

// One step of SplitMix64: adjacent inputs give unrelated outputs.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The seed of worker `index`'s random streams (selection, mutation, initial weights, batches).
// In the process that created the run, a function of --seed and the index alone: a one-worker
// search then repeats bit for bit (the order of children is the only order there is; the CPU
// kernels are deterministic at a given thread count). A process that opened a run already there
// (a resume, or one of many processes on one folder) mixes in its host, pid and start time: with
// the same --seed (every process of a run must have the run's, for its data split) two joiners
// would otherwise draw the same tournaments and the same mutations.
uint64_t worker_seed(const Shared& sh, int index) {
  uint64_t s = mix64(sh.opts.seed ^ mix64(uint64_t(index) + 1));
  if (!sh.population.created())
    s = mix64(s ^ std::hash<std::string>{}(sh.host)) ^ mix64(uint64_t(::getpid())) ^
        mix64(uint64_t(sh.start * 1e6));
  return s;
}

void worker_main(Shared& sh, int index, Device device) {
  const SearchOptions& o = sh.opts;
  const std::string worker = device.str() + "/" + std::to_string(index);
  if (device.is_cpu()) set_cpu_threads(o.threads_per_worker);
  const uint64_t seed = worker_seed(sh, index);
  std::mt19937_64 rng(seed);
  Context ctx(device, mix64(seed), uint32_t(index));
  const DeviceDataset& data = *sh.device_data.at(device.str());

  TrainOptions topts;
  topts.steps = o.steps;
  topts.batch = o.batch;
  topts.set_augment(o.augment);
  topts.schedule = o.lr_schedule;
  topts.stop = &sh.stop;
  topts.check_every = std::min(100, std::max(1, o.steps / 4));
  int failures_in_a_row = 0;

  while (!sh.stopping()) {
    // A worker whose children keep failing (a device short of memory, a driver hiccup) waits
    // before the next one: 1 s after the third failure in a row, doubling to a minute, so a
    // broken setup cannot kill one individual per failure at file-system speed.
    if (failures_in_a_row >= kFailuresBeforeBackoff) {
      const double wait = std::min(60.0, std::ldexp(1.0, failures_in_a_row - kFailuresBeforeBackoff));
      for (double t = 0; t < wait && !sh.stopping(); t += 0.1)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (sh.stopping()) break;
    }
    if (!sh.reserve_child()) break;
    // Whatever way this iteration ends, the reservation ends with it: finished when the child is
    // published (or lost), given back otherwise, an unexpected exception included.
    Reservation held(sh);
    IndividualRecord rec;
    Dna dna;
    std::optional<CompiledDna> limited_plan;  // compiled already by the size limits' check
    std::optional<Parent> parent;
    rec.worker = worker;
    rec.host = sh.host;
    // The staging folder owns the child's slot until publish(); destroyed early (a stop, an
    // exception), it gives the slot back.
    Population::Staging staging = sh.population.begin_child();
    rec.id = staging.id;
    try {
      const FreeSlot slot = sh.population.take_free_slot(staging);
      if (slot == FreeSlot::kReturned) parent = select_parent(sh, rng, staging, false);
      if (slot == FreeSlot::kNone) {
        parent = select_parent(sh, rng, staging, true);
        if (!parent) {  // no population to select from yet, or stopping
          sh.population.abandon(std::move(staging));
          held.give_back();
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          continue;
        }
      }
      if (!parent) {
        dna = initial_dna();
        rec.mutation = "initial";
      } else {
        LimitedChild c = mutate_within_limits(sh, parent->dna, rng);
        dna = std::move(c.mutation.child);
        limited_plan = std::move(c.plan);
        rec.parent = parent->record.id;
        rec.mutation = to_string(c.mutation.mutation);
        rec.detail = c.mutation.detail;
        if (c.mutation.reset_weights) parent->weights_path.clear();
      }
    } catch (const std::exception& e) {
      sh.population.abandon(std::move(staging));
      held.give_back();
      sh.warn(worker + ": selection failed: " + e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }

    rec.learning_rate = dna.learning_rate;
    topts.on_progress = [&](int, double, double) { sh.population.heartbeat(staging); };
    try {
      const CompiledDna plan = limited_plan ? std::move(*limited_plan)
                                            : compile(dna, data.h, data.w, data.c, data.classes);
      rec.params = plan.param_count;
      Weights weights;
      if (parent && !parent->weights_path.empty()) {
        try {
          const CompiledDna pplan = compile(parent->dna, data.h, data.w, data.c, data.classes);
          const Weights pw = load_weights(parent->weights_path, pplan, device);
          weights = inherit_weights(pplan, pw, plan, ctx, o.inheritance);
        } catch (const Error&) {
          weights = init_weights(plan, ctx);  // the parent's weights are gone or unusable
        }
      } else {
        weights = init_weights(plan, ctx);
      }
      Model model(plan, o.batch, ctx);
      model.bind(weights);
      const TrainResult tr = train_model(model, data, ctx, topts, float(dna.learning_rate));
      if (tr.interrupted) {
        sh.population.abandon(std::move(staging));
        held.give_back();
        break;
      }
      rec.steps = tr.steps_done;
      rec.train_seconds = tr.seconds;
      rec.flops = tr.flops;
      if (tr.failed) {
        rec.failed = true;
        rec.failure = tr.failure;
      } else {
        Model eval_model(plan, kEvalBatch, ctx);
        eval_model.bind(weights);
        const EvalResult val = evaluate_model(eval_model, data, "val", ctx);
        rec.fitness = val.accuracy();
        rec.flops += val.flops;
        save_weights(weights, staging.weights_path());
      }
    } catch (const CudaError& e) {
      if (e.sticky()) {
        // The GPU's context is broken for good (an illegal address, a launch failure): every
        // later call on it fails the same way, so this child says nothing about its DNA. It is
        // abandoned, not published as failed: its slot goes back to the population, to be
        // refilled by selection (docs/population.md), and this worker stops; the others go on.
        sh.population.abandon(std::move(staging));
        held.give_back();
        throw WorkerStopped(worker + " stopped: its GPU failed for good (" + e.what() +
                            "); the other workers go on. Restart evo to use " + device.str() +
                            " again");
      }
      // Out of memory and other errors of one call: the child fails, the search goes on.
      rec.failed = true;
      rec.failure = e.what();
    } catch (const std::exception& e) {
      // A shape too large, a host allocation failing: the child fails, the search goes on.
      rec.failed = true;
      rec.failure = e.what();
    }
    failures_in_a_row = rec.failed ? failures_in_a_row + 1 : 0;
    if (rec.failed) rec.fitness = 0;
    try {
      save_dna(dna, staging.dna_path());
      sh.population.publish(std::move(staging), rec);
    } catch (const std::exception& e) {
      held.finish();
      sh.warn(worker + ": could not publish " + rec.id + ": " + e.what());
      continue;
    }
    held.finish();
    log_child(sh, worker, rec);
  }
}

}  // namespace

int misfit_convs(const CompiledDna& plan) {
  int n = 0;
  for (const EdgePlan& e : plan.edges)
    if (e.type == EdgeType::Conv &&
        (e.kh > e.in.h || e.kw > e.in.w || (e.stride > 1 && e.in.h == 1 && e.in.w == 1)))
      ++n;
  return n;
}

RunSettings read_run_settings(const std::string& run_dir) {
  RunSettings r;
  const std::string path = run_dir + "/run.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return r;
  const nlohmann::json j = parse_json_limited(read_file_limited(path, 1 << 20, "run file"), path);
  if (!j.is_object()) throw Error(path + ": not a JSON object; the run folder is damaged");
  if (j.contains("settings") && j["settings"].is_object()) r.settings = j["settings"];
  if (j.contains("population_size") && j["population_size"].is_number_integer())
    r.population = j["population_size"].get<int>();
  return r;
}

SearchSummary best_of_run(const std::string& run_dir, const std::string& data_spec, int ensemble,
                          Device device, uint64_t seed, double val_fraction, int max_train,
                          bool final_phase) {
  Population pop(run_dir);
  SearchSummary s;
  const std::vector<IndividualRecord> all = pop.all_individuals(&s.damaged);
  double first_birth = INFINITY, last_birth = 0;
  s.individuals = int(all.size());
  for (const IndividualRecord& r : all) {
    s.individuals_failed += r.failed;
    s.total_flops += r.flops;
    first_birth = std::min(first_birth, r.birth_time);
    last_birth = std::max(last_birth, r.birth_time + r.train_seconds);
  }
  const double hours = (last_birth - first_birth) / 3600;
  s.children_per_hour = hours > 0 ? double(all.size()) / hours : 0;

  std::vector<IndividualRecord> alive;
  for (const IndividualRecord& r : all)
    if (r.alive() && !r.failed) alive.push_back(r);
  std::sort(alive.begin(), alive.end(),
            [](const auto& a, const auto& b) { return a.fitness > b.fitness; });
  if (alive.empty()) return s;
  s.best_id = alive[0].id;
  s.best_val = alive[0].fitness;
  s.best_test = NAN;

  DataOptions dopts;
  dopts.val_fraction = val_fraction;
  dopts.seed = seed;
  dopts.max_train = max_train;
  const Dataset data = load_dataset(data_spec, dopts);
  Context ctx(device, seed);
  const DeviceDataset dev = DeviceDataset::upload(data, device);
  std::vector<double> avg;
  const int k = std::min<int>(std::max(ensemble, 1), int(alive.size()));
  for (int i = 0; i < k; ++i) {
    try {
      const CompiledDna plan = compile(load_dna(pop.dna_path(alive[i].id)), data.train.h,
                                       data.train.w, data.train.c, data.classes);
      Weights w = load_weights(pop.weights_path(alive[i].id), plan, device);
      Model model(plan, kEvalBatch, ctx);
      model.bind(w);
      const EvalResult r = evaluate_model(model, dev, "test", ctx, true);
      if (i == 0) s.best_test = r.accuracy();
      if (avg.empty()) avg.assign(r.probabilities.size(), 0.0);
      for (std::size_t j = 0; j < avg.size(); ++j) avg[j] += r.probabilities[j];
      ++s.ensemble_size;
    } catch (const Error& e) {
      // Damaged, or killed while we read it: the ensemble uses the others; the best's own
      // accuracy is then not measured, and says why.
      if (i == 0) s.best_error = e.what();
    }
  }
  s.ensemble_test = ensemble_accuracy(avg, data.test.labels, data.classes);
  s.answer = "best individual";  // unless the run has a final phase:
  s.answer_test = s.best_test;
  if (final_phase) detail::measure_final_phase(run_dir, data, dev, ctx, s);
  return s;
}

SearchSummary run_search(const SearchOptions& opts_in, const std::atomic<bool>& user_stop,
                         SearchObserver* observer) {
  SearchObserver silent;  // no observer: nobody hears anything
  SearchObserver& heard = observer ? *observer : silent;
  if (opts_in.devices.empty()) throw UsageError("the search needs at least one worker");
  // Several CPU workers: each gets its share of the cores (set_cpu_threads in its thread).
  SearchOptions opts = opts_in;
  const int cpu_workers = int(std::count_if(opts.devices.begin(), opts.devices.end(),
                                            [](const Device& d) { return d.is_cpu(); }));
  if (opts.threads_per_worker <= 0)
    opts.threads_per_worker =
        std::max(1, int(std::thread::hardware_concurrency()) / std::max(cpu_workers, 1));

  // Everything that can be wrong with the invocation is found before the run folder is created
  // or changed: a corrected command must not meet a run.json its mistake wrote.
  DataOptions dopts;
  dopts.val_fraction = opts.val_fraction;
  dopts.seed = opts.seed;
  dopts.max_train = opts.max_train;
  dopts.max_val = opts.max_val;
  Dataset data = load_dataset(opts.data, dopts);
  if (data.train.n < opts.batch)
    throw UsageError("the training set of " + opts.data + " has " + std::to_string(data.train.n) +
                     " images, fewer than one batch of " + std::to_string(opts.batch) +
                     (opts.max_train > 0 ? ": raise --max-train" : ""));
  if (data.val.n < 1)
    throw UsageError("the validation set of " + opts.data +
                     " is empty: raise --max-val or the share of images held out");

  if (opts.max_params > 0 || opts.max_flops > 0) {
    const CompiledDna first = compile(initial_dna(), data.train.h, data.train.w, data.train.c,
                                      data.classes);
    if ((opts.max_params > 0 && first.param_count > opts.max_params) ||
        (opts.max_flops > 0 && first.forward_flops > opts.max_flops))
      throw UsageError("the initial individual (global pool + fully connected) already has " +
                       std::to_string(first.param_count) + " parameters and " +
                       std::to_string(int64_t(first.forward_flops)) + " FLOPs on " + opts.data +
                       ": raise --max-params / --max-flops above that");
  }

  Shared sh(opts, user_stop, heard);
  sh.data = std::move(data);
  SearchStart start;
  start.recovered = sh.population.recover(opts.stale_seconds);
  start.quarantined = sh.population.quarantine_damaged();
  start.resumed = sh.population.alive_ids().size();
  // A resumed run's "best so far" goes on from the run's best, not from 0: the per-child lines'
  // best column and the summaries' stagnation clock read it.
  if (start.resumed) {
    for (const IndividualRecord& r : sh.population.all_individuals())
      if (!r.failed && std::isfinite(r.fitness)) sh.best_val = std::max(sh.best_val, r.fitness);
    start.resumed_best = sh.best_val;
  }
  for (const Device& d : opts.devices)
    if (!sh.device_data.count(d.str()))
      sh.device_data[d.str()] = std::make_unique<DeviceDataset>(DeviceDataset::upload(sh.data, d));
  start.options = opts;
  start.data_name = sh.data.name;
  start.train_images = sh.data.train.n;
  start.val_images = sh.data.val.n;
  heard.started(start);  // no worker runs yet: no lock needed

  std::atomic<int> running{int(opts.devices.size())};
  std::vector<std::thread> workers;
  for (std::size_t i = 0; i < opts.devices.size(); ++i)
    workers.emplace_back([&sh, &running, i, device = opts.devices[i]] {
      try {
        worker_main(sh, int(i), device);
      } catch (const WorkerStopped& e) {
        sh.warn(e.what());
        std::lock_guard<std::mutex> lock(sh.mutex);
        sh.broken_devices.insert(device.str());
      } catch (const std::exception& e) {
        sh.warn("worker " + std::to_string(i) + " stopped: " + e.what());
      }
      --running;
    });
  // Workers stop by themselves at --max-children or Ctrl-C (finishing or abandoning their child);
  // the time limit ends the run on time: in-flight children are abandoned cleanly.
  double last_recover = now_seconds();
  // With a final phase the search's own part ends early: the rest of the limit is the phase's.
  const bool final_phase = opts.final_share > 0 && opts.time_limit > 0;
  const double search_limit = opts.time_limit * (final_phase ? 1 - opts.final_share : 1.0);
  bool timed_out = false;
  while (running.load() > 0) {
    if (opts.time_limit > 0 && now_seconds() - sh.start >= search_limit) {
      sh.stop = true;
      timed_out = true;
    }
    // Checking more often than half the staleness would only read the same folders again.
    const double every = std::min(opts.recover_every, opts.stale_seconds / 2);
    if (opts.recover_every > 0 && now_seconds() - last_recover >= every) {
      last_recover = now_seconds();
      try {
        if (const std::size_t n = sh.population.recover(opts.stale_seconds); n > 0) {
          std::lock_guard<std::mutex> lock(sh.mutex);
          heard.reclaimed(n);
        }
      } catch (const Error& e) {  // a folder fault now is not worth stopping the search for
        sh.warn(std::string("evo search: recovering dead workers' children failed: ") + e.what());
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& w : workers) w.join();
  sh.population.collect_garbage();

  // The final evaluation on the first device whose context is still sound (the CPU when none is).
  Device final_device = Device::cpu();
  for (const Device& d : opts.devices)
    if (!sh.broken_devices.count(d.str())) {
      final_device = d;
      break;
    }

  // The final phase, when the time limit (not Ctrl-C, not --max-children) ended the search. The
  // margin left at its end is for what follows: the top-k test pass, final.json, the report
  // (~5-20 s for a 30-minute CPU run, more for a large population on a shared folder): 3% of
  // the limit, at least 15 s and at most 2 minutes, but never more than a quarter of it.
  detail::FinalPhase fin;
  bool ran_final = false;
  if (final_phase && timed_out && !user_stop.load()) {
    const double margin =
        std::min(std::clamp(0.03 * opts.time_limit, 15.0, 120.0), 0.25 * opts.time_limit);
    const double seconds = sh.start + opts.time_limit - margin - now_seconds();
    std::vector<Device> sound;
    for (const Device& d : opts.devices)
      if (!sh.broken_devices.count(d.str())) sound.push_back(d);
    const int top = std::min<int>(opts.final_top > 0 ? opts.final_top : int(sound.size()),
                                  int(sound.size()));
    if (seconds < 5 || top < 1) {
      sh.warn("evo search: no final phase: " +
              (top < 1 ? std::string("no worker's device is left")
                       : "only " + std::to_string(std::max(0, int(seconds))) +
                             " s of the time limit are left"));
    } else {
      // Of the processes sharing the run folder, one trains the final phase into RUN/final/
      // (Population::claim_final): two would write their models into the same folder.
      std::string holder;
      const Population::FinalClaim claim =
          sh.population.claim_final(sh.start, opts.stale_seconds, &holder);
      const std::vector<std::string> ids =
          claim == Population::FinalClaim::kClaimed ? detail::distinct_best(sh.population, top)
                                                    : std::vector<std::string>{};
      if (claim == Population::FinalClaim::kHeld)
        sh.warn("evo search: no final phase here: another process of this run (" + holder +
                ") is training it into " + opts.run_dir + "/final/; evo best " + opts.run_dir +
                " shows its answer when it is done");
      else if (claim == Population::FinalClaim::kDone)
        sh.warn("evo search: no final phase here: another process of this run (" + holder +
                ") finished one after this search began; its answer is in " + opts.run_dir +
                "/final/");
      if (!ids.empty()) {
        heard.final_started(int(ids.size()), seconds);
        fin = detail::run_final_phase(sh.population, ids, sound, sh.device_data, sh.data, opts,
                                      seconds, user_stop, [&](const FinalModel& m) {
                                        std::lock_guard<std::mutex> lock(sh.mutex);
                                        heard.final_done(m);
                                      });
        ran_final = true;
      }
      if (claim == Population::FinalClaim::kClaimed) {
        try {
          sh.population.finish_final();
        } catch (const Error& e) {
          sh.warn(std::string("evo search: the final phase's claim was not marked done (a "
                              "later process of this run may train it again): ") + e.what());
        }
      }
    }
  }
  SearchSummary s = best_of_run(opts.run_dir, opts.data, opts.ensemble, final_device, opts.seed,
                                opts.val_fraction, opts.max_train);
  s.children = sh.children;
  s.failed = sh.failed;
  nlohmann::json final_extra = nlohmann::json::object();
  if (ran_final) {
    s.final_models = int(fin.models.size());
    s.final_seconds = fin.seconds;
    s.final_ensemble_test = fin.ensemble_test;
    s.final_ensemble_val = fin.ensemble_val;
    if (fin.chosen >= 0) {
      const FinalModel& m = fin.models[std::size_t(fin.chosen)];
      s.final_id = m.id;
      s.final_folder = "final/" + m.folder;
      s.final_val = m.val;
      s.final_test = m.test;
      final_extra = {{"final_id", m.id},
                     {"final_folder", "final/" + m.folder},
                     {"final_val_accuracy", m.val},
                     {"final_test_accuracy", m.test},
                     {"final_models", s.final_models},
                     {"final_seconds", fin.seconds}};
      if (std::isfinite(fin.ensemble_test)) final_extra["final_ensemble_test"] = fin.ensemble_test;
      if (std::isfinite(fin.ensemble_val)) final_extra["final_ensemble_val"] = fin.ensemble_val;
      s.answer = fin.ensemble_answer ? "ensemble" : "final model";
      s.answer_test = fin.ensemble_answer ? fin.ensemble_test : m.test;
      final_extra["answer"] = s.answer;
      final_extra["answer_test_accuracy"] = s.answer_test;
    }
  }

  s.seconds = now_seconds() - sh.start;
  s.stopped = user_stop.load();
  if (!s.best_id.empty() && std::isfinite(s.best_test))
    save_final_results(opts.run_dir, s.best_id, s.best_test, s.ensemble_test, s.ensemble_size,
                       final_extra);
  ReportWritten report = write_report(opts.run_dir, opts.report);
  s.report_path = std::move(report.path);
  s.trials_path = std::move(report.trials_path);
  s.report_damaged = std::move(report.damaged);
  return s;
}

}  // namespace evo
