// The population store of the search: a run folder (local, or on NFS shared by many machines) of
// every individual, changed only by atomic renames. Not the search, and no model code in here.
//
// Layout of a run folder RUN (docs/population.md has the protocol, the proofs and the formats):
//   RUN/run.json          population size N and the run's settings; the run appears with it
//   RUN/alive/<id>/       dna.json, weights.evow, metrics.json, slot.json: a complete individual
//   RUN/dead/<id>/        the same plus death.json; weights.evow removed by collect_garbage()
//   RUN/staging/<id>/     a child being written (owner.json says which process); never alive
//   RUN/free/<slot>.json  free places in the population: the N initial ones at first, later those
//                         of children that were abandoned or whose worker died
//
// Slots make the population size exact without locks. A child joins alive/ only by taking a
// slot: a free one (take_free_slot), or its victim's (kill moves the victim into the child's
// staging folder, one rename). Each slot is always in exactly one place, so at every instant
//   |alive| + |free| + |staging folders holding a slot| = N,
// hence |alive| <= N always, and |alive| >= N - W once the free slots are used (W = live workers,
// each holding at most one slot), until a worker dies; recover() then frees its slot again.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "evo/error.h"

namespace evo {

// One individual as metrics.json (+ death.json once dead) records it. Times are unix seconds.
struct IndividualRecord {
  std::string id;               // the folder name; assigned by begin_child()
  std::string parent;           // empty for an individual of the initial population
  std::string mutation;         // "initial", "ALTER-LEARNING-RATE", ...
  std::string detail;           // what the mutation changed, for people
  double fitness = 0;           // validation accuracy in [0, 1]; 0 for a failed child
  double test_accuracy = NAN;   // NaN when not measured
  bool failed = false;          // training failed (NaN loss, out of memory, ...): fitness 0
  std::string failure;          // why, for people
  double birth_time = NAN;      // when it joined alive/ (publish() fills it in when NaN)
  double death_time = NAN;      // when it was killed; NaN while alive
  std::string killed_by;        // id of the child that took its slot; empty while alive
  int64_t steps = 0;            // training steps done
  double flops = 0;             // training + validation FLOPs of this individual
  double cumulative_flops = 0;  // flops of this individual and all its ancestors (optional)
  int64_t params = 0;
  std::string worker;  // which worker trained it ("cuda:0/1")
  std::string host;    // which machine (publish() fills it in when empty)
  double train_seconds = 0;
  double learning_rate = 0;

  bool alive() const { return std::isnan(death_time); }
};

// JSON with the field names above; NaN is written as null and read back as NaN.
nlohmann::json to_json(const IndividualRecord& r);
// `source` names the file in error messages.
IndividualRecord record_from_json(const nlohmann::json& j, const std::string& source);

// What a free slot is for: kInitial slots are the paper's initial population (fill them with a
// fresh single-layer individual); kReturned ones were freed by an abandoned or dead child (fill
// them with a child of a parent chosen by selection, without a kill, or an initial one when no
// individual is alive).
enum class FreeSlot { kNone, kInitial, kReturned };

struct PopulationOptions {
  // N. When the run does not exist yet, it is created with N free slots; when it exists, a value
  // other than 0 must match its run.json. 0: open an existing run only.
  int size = 0;
  // What must stay the same for every process of a run (data set, steps, selection, ...): stored
  // in run.json by the creator; a later process whose settings disagree on a key that both have
  // is refused. A JSON object.
  nlohmann::json settings = nlohmann::json::object();
  // What the creator records beside its settings and no later process is compared on (the time
  // limit it was started with: a resume may ask for another). run.json's "created_with".
  nlohmann::json recorded = nlohmann::json::object();
  // fsync files and folders before each rename, so that a power failure (not only a crash of the
  // process) keeps the folder consistent. Off makes tests faster; a crash is survived either way.
  bool durable = true;
  // Hears the one problem the store survives without throwing: a child destroyed while still
  // open whose folder could not be abandoned (recover() frees its slot later). One line for
  // people, no newline. The store prints nothing; unset, the line is dropped.
  std::function<void(const std::string&)> on_warning;
};

// Every method may be called from many threads and many processes at once, on many machines.
class Population {
 public:
  // A child being written in RUN/staging/<id>/. Write dna.json and weights.evow into `dir`, take
  // a slot (take_free_slot or kill), then publish() it. Destroyed while still open (an exception,
  // a stop), it is abandoned: its slot goes back to free/.
  class Staging {
   public:
    std::string id;   // becomes alive/<id>
    std::string dir;  // RUN/staging/<id>

    Staging(Staging&& other) noexcept;
    Staging& operator=(Staging&& other) noexcept;
    Staging(const Staging&) = delete;
    Staging& operator=(const Staging&) = delete;
    ~Staging();

    bool open() const { return open_; }
    std::string dna_path() const { return dir + "/dna.json"; }
    std::string weights_path() const { return dir + "/weights.evow"; }

   private:
    friend class Population;
    Staging(std::string root, std::string id_, bool durable,
            std::function<void(const std::string&)> on_warning);
    void discard() noexcept;  // abandons the folder if still open; never throws
    std::string root_;
    bool durable_ = true;
    bool open_ = false;
    std::function<void(const std::string&)> on_warning_;  // PopulationOptions::on_warning
  };

  // What the folders hold; one listing after another, so exact only while nobody writes.
  struct Census {
    std::size_t alive = 0, dead = 0, free = 0;
    std::size_t staging = 0;  // children being written (or left by dead workers)
    std::size_t held = 0;     // of those, the ones holding a slot
  };

  // Opens the run in `dir`, creating it (and its parents) when it does not exist and
  // options.size > 0. Safe when many processes create the same run at once: exactly one
  // succeeds, the others open it. Throws UsageError when the folder is not a run, or its run.json
  // disagrees with `options`.
  explicit Population(std::string dir, PopulationOptions options = {});

  const std::string& dir() const { return root_; }
  int size() const { return size_; }
  // Whether this object created the run (of several processes opening a new run at once, exactly
  // one did), rather than opening one that was there: the search's random streams repeat only
  // for the creator (src/search/search.cpp, worker_seed).
  bool created() const { return created_; }
  const nlohmann::json& settings() const { return settings_; }
  // run.json's "created_with" (PopulationOptions::recorded of its creator; {} in older runs).
  const nlohmann::json& recorded() const { return recorded_; }

  // A fresh, empty staging folder for one child, with an id unique across machines:
  // "<unix ms>-<host>-<pid>-<counter>" (sorts by creation time).
  Staging begin_child();

  // Moves one free slot into the child. kNone when there is none (then select and kill).
  FreeSlot take_free_slot(Staging& child);

  // Kills `victim` for `child`: moves alive/<victim> into the child's staging folder (the one
  // atomic step: of several workers racing for the same victim, exactly one gets true), records
  // death.json and moves it on to dead/<victim>; the child then holds the victim's slot. False
  // when the victim is no longer alive (killed by someone else first): choose again.
  bool kill(Staging& child, const std::string& victim);

  // Writes metrics.json from `record` (id, and birth_time and host when unset, filled in) and
  // renames the staging folder to alive/<id>. The child must hold a slot and have dna.json, and
  // weights.evow unless record.failed. Failed children join alive/ too, with fitness 0, so the
  // population keeps its size; selection kills them.
  void publish(Staging&& child, IndividualRecord record);

  // Discards the child; a slot it holds goes back to free/ (a victim stays dead).
  void abandon(Staging&& child);

  // Tells other machines that this child's worker is alive (touches its staging folder). Call it
  // more often than their recover()'s stale_seconds while training a long child.
  void heartbeat(const Staging& child) const;

  std::vector<std::string> alive_ids() const;
  std::size_t dead_count() const;
  std::size_t free_count() const;
  Census census() const;
  // The children being trained now, by whom: one entry per staging folder (its id, and its
  // owner.json's host, pid and since; a folder without a readable owner.json has host "").
  struct Training {
    std::string id, host;
    int pid = 0;
    double since = NAN;      // when the child was begun (Unix seconds)
    double heartbeat = NAN;  // its folder's last change (mtime), the worker's last heartbeat
  };
  std::vector<Training> training() const;

  // The individual's record, alive (death_time NaN) or dead; nullopt when it is in neither (never
  // existed, or caught for a moment between the two by a kill).
  std::optional<IndividualRecord> read(const std::string& id) const;
  // Files of an individual: under alive/ while it is alive, else under dead/ (where weights.evow
  // may be garbage-collected).
  std::string dna_path(const std::string& id) const;
  std::string weights_path(const std::string& id) const;

  // Every individual of the run, alive then dead (for reports); an individual being killed at
  // this very moment may be missed. A record that cannot be read (a truncated metrics.json, a
  // death.json that is not JSON) is left out and, when `damaged` is given, named there with the
  // reason ("<path>: ..."), so one bad file never stops a report.
  std::vector<IndividualRecord> all_individuals(std::vector<std::string>* damaged = nullptr) const;

  // Moves every alive individual whose record cannot be read out of the population: it is killed
  // as selection would kill it (its slot goes back to free/, refilled by the next child), then
  // its folder moves from dead/ to damaged/, where nothing reads it. Returns "<id>: <reason>" for
  // each. A search calls it at start; readers never move anything.
  std::vector<std::string> quarantine_damaged();

  // Discards the staging folders of dead workers and frees their slots; a victim they had taken
  // is finished (dead/, death.json). A worker on this machine is dead when its process is gone
  // (pid and start time); on another machine, when its folder has had no heartbeat for
  // stale_seconds. Returns how many children were discarded.
  std::size_t recover(double stale_seconds);

  // The right to run the search's final phase into RUN/final/: one process of the many that may
  // share a run holds it at a time (RUN/final.claim/, its owner.json, renamed into place whole:
  // of several claimants exactly one rename succeeds, as a kill's does). `search_started` is
  // when this process's search began (Unix seconds). The claim is:
  //   kClaimed  this process holds it now: run the phase, heartbeat_final() while it trains,
  //             finish_final() when final/ is written;
  //   kHeld     a live process holds it (on this machine: its pid and start time; elsewhere: a
  //             heartbeat within stale_seconds): its final phase is the run's answer, skip ours;
  //   kDone     a final phase finished after this process's search began: the sibling's answer
  //             already covers our search, skip ours.
  // A claim whose holder died, or one finished before this search began (an earlier run of the
  // same folder, now resumed), is replaced. `holder` says who holds or held it ("host pid").
  enum class FinalClaim { kClaimed, kHeld, kDone };
  FinalClaim claim_final(double search_started, double stale_seconds, std::string* holder);
  // Tells other machines that the holder is alive (touches RUN/final.claim). False when the claim
  // is gone (taken over by a process that judged this one dead); never throws.
  bool heartbeat_final() const;
  // Marks the claim done (RUN/final.claim/done.json, the time): later claimants whose searches
  // began before it skip their final phases; a resume after it runs one again.
  void finish_final();

  // Removes weights.evow of individuals dead for at least min_dead_seconds (the grace lets a
  // worker that chose a parent just before it was killed still load its weights). Returns how
  // many files it removed.
  std::size_t collect_garbage(double min_dead_seconds = 600);

 private:
  std::string root_;
  int size_ = 0;
  nlohmann::json settings_;
  nlohmann::json recorded_ = nlohmann::json::object();
  bool durable_ = true;
  bool created_ = false;
  std::function<void(const std::string&)> on_warning_;
};

}  // namespace evo
