// The evolutionary search of Real et al. 2017: workers (one per device stream) that select, mutate,
// train and publish children into a shared population folder. Not the store (population.h), and
// not the console: the search prints nothing, it tells a SearchObserver (src/cli/search.cpp
// prints what it hears as evo search's lines).
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "evo/device.h"
#include "evo/model.h"
#include "evo/population.h"
#include "evo/train.h"

#include <nlohmann/json.hpp>

namespace evo {

enum class Selection { Tournament, Aging };

struct SearchOptions {
  std::string data = "fashion-mnist";
  std::string run_dir = "runs/latest";
  std::vector<Device> devices;  // one entry per worker (a device may repeat: several streams)
  int population = 1000;
  int steps = 25600;  // training steps per child
  int batch = 50;
  bool augment = true;       // pad-4 random crops and flips (He et al. 2016), as the paper
  Selection selection = Selection::Tournament;
  int sample_size = 2;       // tournament: 2 (the paper); aging: S individuals per selection
  Inheritance inheritance = Inheritance::Paper;  // model.h: paper's rule, or keep the overlap
  // Size limits (0 = none): a mutation whose child would have more trainable parameters or more
  // forward FLOPs per image is drawn again, so no individual over a limit is ever trained or
  // joins the population (search.cpp, "size limits").
  int64_t max_params = 0;
  double max_flops = 0;
  // ---- beyond the paper (each off by default here; src/cli/search.cpp picks the CPU defaults,
  // bench/results/cpu_search.md measures them) ----
  // Each child's learning rate over its steps (train.h): the paper's constant, or cosine.
  LrSchedule lr_schedule = LrSchedule::Constant;
  // Mutations whose child has more convolutions that misfit their input (misfit_convs) than its
  // parent are drawn again, as over a size limit: such taps read padding or do nothing.
  bool fit_filters = false;
  // Tournament: when the two sampled individuals' validation accuracies differ by at most this
  // (a fraction, 0.002 = 0.2 points), the one with fewer training FLOPs per step wins. 0: the
  // paper's rule (the higher accuracy wins, ties at random).
  double cost_tie = 0;
  // The final phase: this share of time_limit (0-0.9; needs a time limit) is kept for the end,
  // when the top `final_top` distinct architectures (0: one per worker) train again, in parallel,
  // with a cosine rate over the time left (from their weights or widened from fresh ones:
  // final_width; augmented or not: final_augment); the one with the best validation accuracy
  // then is the run's final model (RUN_DIR/final/, final.json).
  double final_share = 0;
  int final_top = 0;
  // The final phase's width multiplier: 1 trains the architectures on from their search weights;
  // K > 1 multiplies the depth factor of the first convolution on the backbone (the one that
  // reads the image, directly or through identity edges), which widens every layer after it
  // about K times (the others' factors are ratios), and trains the
  // widened net from fresh weights (nothing to inherit at the new width). 0: "auto", each
  // architecture at the widest of 1, 1.5, 2, 3, 4, 6 and 8 whose measured speed still gives it
  // `final_epochs` passes over the training set in the phase's time (src/search/final.cpp).
  double final_width = 1;
  double final_epochs = 12;
  // Augmentation while the final phase trains (its nets see tens of epochs there, where the
  // search's children see one): 0 none, 1 random horizontal flips, 2 flips and the paper's pad-4
  // random crops.
  int final_augment = 0;
  double time_limit = 0;     // seconds; 0 = none
  int max_children = 0;      // children trained by this process; 0 = none
  uint64_t seed = 0;
  double val_fraction = 0.1;
  int max_train = 0;         // train on a subset (0 = all)
  int max_val = 0;           // validate on a subset (0 = all)
  int threads_per_worker = 0;  // CPU threads per worker (0: cores / workers)
  int ensemble = 5;          // the top k whose averaged softmax is reported at the end
  double summary_every = 300;  // seconds between progress summaries
  // Seconds between recoveries of the children of dead workers (any process on the run folder:
  // on this host at once by pid, on others after 600 s without a heartbeat), so the survivors of
  // a crash reclaim its slots without waiting for it to restart.
  double recover_every = 60;
  // A worker on another machine (or another EVO_HOST) whose child has had no heartbeat for this
  // long is dead. Heartbeats come every few seconds; the margin covers file-system clock skew and
  // a child's slowest stretch (validation, writing its files).
  double stale_seconds = 600;
  std::string report;        // write the HTML report here at the end ("" = RUN_DIR/report.html)
};

struct SearchSummary {
  int children = 0;          // trained by this process (0 from evo best: it trains none)
  int failed = 0;
  // Every individual in the run folder, of every process and run, the initial ones included,
  // and how many of those failed (best_of_run counts them).
  int individuals = 0, individuals_failed = 0;
  double seconds = 0;
  // Ended by the caller's stop flag (Ctrl-C, SIGTERM) rather than by its limits: running the
  // same command again resumes the run.
  bool stopped = false;
  double total_flops = 0;    // of every individual in the run (training + validation)
  std::string best_id;
  double best_val = 0;
  // Test accuracy of the best individual by validation accuracy; NaN when it could not be
  // measured (its files are damaged or gone: best_error says why).
  double best_test = 0;
  std::string best_error;
  std::vector<std::string> damaged;  // records left out, "<path>: <reason>"
  double ensemble_test = 0;  // test accuracy of the averaged softmax of the top `ensemble`
  int ensemble_size = 0;
  double children_per_hour = 0;
  // The final phase's result (SearchOptions::final_share); final_test is NaN when there was none.
  std::string final_id;
  std::string final_folder;  // its files, relative to the run folder: "final/<rank>-<id>"
  double final_val = NAN, final_test = NAN, final_ensemble_test = NAN;
  double final_ensemble_val = NAN;  // the final ensemble's validation accuracy
  int final_models = 0;
  double final_seconds = 0;
  // The run's answer: the final ensemble when it beats the final model on the validation set
  // (ensemble_is_answer), else the final model, else (no final phase) the best individual.
  // answer_test is its test accuracy.
  std::string answer;  // "ensemble", "final model" or "best individual"
  double answer_test = NAN;
  std::string report_path;
  std::string trials_path;  // RUN_DIR/trials.csv, one row per individual ("" when not written)
  // Records the report at the end of run_search left out, "<path>: <reason>" (the report reads the
  // run again, so these may differ from `damaged`). Empty for best_of_run, which writes no report.
  std::vector<std::string> report_damaged;
};

// ---- what a running search tells its caller --------------------------------------------------

// Once, when the data is loaded and the run folder opened, before any child is trained.
struct SearchStart {
  SearchOptions options;  // as the search runs them (threads_per_worker filled in)
  std::string data_name;  // "fashion-mnist", ...
  int train_images = 0, val_images = 0;
  std::size_t resumed = 0;    // individuals alive in the run folder when this process started
  double resumed_best = 0;    // then, the run's best validation accuracy so far (alive or dead)
  std::size_t recovered = 0;  // unfinished children of dead workers discarded at the start
  // Alive individuals whose record could not be read, moved to RUN_DIR/damaged/ (their slots are
  // refilled by selection): "<id>: <reason>" (Population::quarantine_damaged).
  std::vector<std::string> quarantined;
};

// Each child this process published, failed or not.
struct ChildDone {
  double elapsed = 0;     // seconds since the search started
  std::string worker;     // "cpu/0", "cuda:1/3": device and worker index
  IndividualRecord record;
  double best_val = 0;    // the best validation accuracy of this process's children so far
};

// Every SearchOptions::summary_every seconds, right after a ChildDone.
struct SearchProgress {
  double elapsed = 0;          // seconds since the search started
  int children = 0, failed = 0;  // published by this process (children: those that did not fail)
  std::size_t population = 0;  // individuals alive in the run folder now
  double best_val = 0;
  double since_best = 0;       // seconds since best_val last rose: a stuck search shows it here
};

// One model of the final phase, trained and measured.
struct FinalModel {
  std::string id, folder;  // folder: under RUN_DIR/final/
  int64_t params = 0;
  double width = 1;              // its width multiplier (SearchOptions::final_width, or the chosen)
  double epochs = 0;             // passes over the training set it trained for
  double search_val = NAN;       // its fitness in the search
  double val = NAN, test = NAN;  // after the final phase
  int steps = 0;
  double seconds = 0;
  bool failed = false;
  std::string failure;
  double learning_rate = NAN;         // the rate it trained at last (the DNA's, or a fifth of it
  std::vector<std::string> retries;   // per restart after a diverged loss: why it restarted)
};

// The search calls these from its threads, one call at a time (never two at once) and in the
// order things happened; a worker waits while its call runs, so they should be quick. Every
// method does nothing by default: tests pass no observer at all.
class SearchObserver {
 public:
  virtual ~SearchObserver() = default;
  virtual void started(const SearchStart&) {}
  virtual void child_done(const ChildDone&) {}
  virtual void progress(const SearchProgress&) {}
  // A recovery while the search ran reclaimed the slots of `children` (> 0) of dead workers.
  virtual void reclaimed(std::size_t /*children*/) {}
  // The final phase begins: `models` architectures, `seconds` of training each.
  virtual void final_started(int /*models*/, double /*seconds*/) {}
  virtual void final_done(const FinalModel&) {}
  // A problem the search survived (a worker's selection or publication failed, a worker stopped,
  // a recovery failed, a child's folder could not be abandoned): one line for people, no newline.
  virtual void warning(const std::string& /*line*/) {}
};

// Runs the search until the time limit, max_children or `stop` (Ctrl-C). Resumes from run_dir when
// it holds a population. Many processes (on many machines) may run it on one run_dir at once.
// `observer` (may be null) hears what happens while it runs; the result is the summary.
SearchSummary run_search(const SearchOptions& opts, const std::atomic<bool>& stop,
                         SearchObserver* observer = nullptr);

// Convolutions of a compiled DNA that misfit their input map: a filter taller or wider than the
// map it reads ('same' padding: most taps of a 7x7 on 4x4 read zeros), or a stride above 1 on a
// 1x1 map (it changes nothing). SearchOptions::fit_filters counts these.
int misfit_convs(const CompiledDna& plan);

// The end-of-run numbers for a run folder (evo best RUN_DIR): the best individual by validation
// accuracy and its test accuracy, the top-k ensemble's, total FLOPs, children per hour. `data`,
// `seed`, `val_fraction` and `max_train` (0: no cap) must be the run's (they choose the test
// images, the split, and the images the standardisation's mean and std come from). With
// `final_phase`, the models a search's final phase left in RUN_DIR/final/ are measured again
// from their files too (the final_* fields; left as they are when there are none).
SearchSummary best_of_run(const std::string& run_dir, const std::string& data, int ensemble,
                          Device device, uint64_t seed, double val_fraction, int max_train = 0,
                          bool final_phase = false);

// The one rule for a run's answer: the final phase's ensemble (the averaged softmax of its
// `members` models that trained) when there are two or more and its validation accuracy is above
// its best member's; else that best member. Why validation and not "always": an ensemble costs
// its members' inference together, so it must earn that on data the choice may look at. (On
// Fashion-MNIST the ensemble of two has won by 0.4-1.0 test points in every 30-minute run
// measured: bench/results/cpu_search.md.)
inline bool ensemble_is_answer(int members, double ensemble_val, double best_val) {
  return members >= 2 && ensemble_val > best_val;  // false when either is NaN
}

// What a final phase's retrain.json says about its ensemble (size 0 in runs from before the
// ensemble was measured on the validation set: then the answer is the final model).
struct FinalEnsemble {
  int size = 0;
  double val = NAN, test = NAN;
  bool answer = false;  // ensemble_is_answer, as the phase decided it
};

// The models a search's final phase left in RUN_DIR/final/ (its retrain.json, "phase": "search"),
// in rank order, as they were measured then; `failed` also when one has no validation accuracy.
// The run's final model is the first with the best `val`; `ensemble`, when given, receives what
// the file says about the ensemble. Empty when the run had no final phase or `evo retrain` has
// replaced it. Throws evo::Error naming the file when it is damaged.
std::vector<FinalModel> read_final_phase(const std::string& run_dir,
                                         FinalEnsemble* ensemble = nullptr);

// A run folder's settings as its run.json records them ({} when there is none), and its
// population size (0 when there is none). Throws evo::Error naming the file when it is damaged.
struct RunSettings {
  nlohmann::json settings = nlohmann::json::object();
  int population = 0;
};
RunSettings read_run_settings(const std::string& run_dir);

}  // namespace evo
