// The search's final phase (SearchOptions::final_share): the best few distinct architectures of
// the population train again (from their search weights, or widened from fresh ones) for the time
// kept at the end, and the best of them by validation accuracy is the run's final model. Private to src/search/: search.cpp calls
// it once the workers have stopped. Not `evo retrain` (src/cli/retrain.cpp), which trains a
// finished run's top K for a number of steps the user chooses, one after another.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "evo/search.h"
#include "evo/train.h"

namespace evo::detail {

struct FinalPhase {
  std::vector<FinalModel> models;
  int chosen = -1;  // index into models: the best validation accuracy (-1: none trained)
  double ensemble_test = NAN;  // averaged softmax of every model that trained
  double ensemble_val = NAN;   // the same on the validation set
  int ensemble_size = 0;       // the models that trained
  bool ensemble_answer = false;  // ensemble_is_answer: the ensemble is the run's answer
  double seconds = 0;
};

// `dna` with its first backbone convolution (the one that reads the image's channels, from the
// input or through identity edges) `k` times deeper (SearchOptions::final_width): every later
// layer's width follows, as depth factors are ratios. Without a conv, `dna` as it is.
Dna widen(const Dna& dna, double k);

// The widths SearchOptions::final_width = 0 ("auto") chooses from.
inline constexpr double kFinalWidths[] = {1, 1.5, 2, 3, 4, 6, 8};

// What the auto width chose for one architecture, and what it measured to choose it.
struct WidthChoice {
  double width = 1;
  double step_seconds = 0;  // measured at `width` (0: not measured, width 1 by elimination)
  std::vector<std::pair<double, double>> probed;  // (width, seconds per step), in probe order
  double probe_seconds = 0;                        // the probes' own time
};

// The widest of kFinalWidths at which `dna` still trains `epochs` passes over `train_images` in
// `seconds` (less the probes' own time), at `batch` images a step with `augment` (0-2, as
// SearchOptions::final_augment), within the size limits `max_params` and `max_flops` (forward,
// per image; 0: none). Speed is measured, not modelled: a probe trains a width from fresh
// weights for about a second on `ctx` (on the threads the phase trains with, so a busy machine
// counts), and the FLOP ratio between widths only says which width to probe next; at most
// four probes. Width 1 when no wider net fits (the net then trains on from its weights).
WidthChoice choose_width(const Dna& dna, const DeviceDataset& dev, Context& ctx, int batch,
                         int augment, double epochs, double seconds, int64_t max_params,
                         double max_flops, const std::atomic<bool>& stop);

// The alive individuals' ids, best first, one per architecture: two DNAs that differ only in
// their learning rate are one architecture (the first, fitter, stands for both). At most `top`.
std::vector<std::string> distinct_best(const Population& pop, int top);

// Trains `ids` (at most one per entry of `devices`, at once, each in its own thread with its own
// context) for `seconds` each, from their search weights (or widened, from fresh ones), with a
// cosine rate over that time, the search's batch and SearchOptions::final_augment; measures
// validation and test accuracy and writes RUN_DIR/final/<rank>-<id>/ (dna.json, weights.evow, metrics.json) and RUN_DIR/final/retrain.json
// (what `evo report` shows). `stop` ends the training early (the models are still measured and
// saved). `done` hears each model as it finishes (from the model's thread, one call at a time).
FinalPhase run_final_phase(const Population& pop, const std::vector<std::string>& ids,
                           const std::vector<Device>& devices,
                           const std::map<std::string, std::unique_ptr<DeviceDataset>>& data,
                           const Dataset& host_data, const SearchOptions& opts, double seconds,
                           const std::atomic<bool>& stop,
                           const std::function<void(const FinalModel&)>& done);

// The models a search's final phase left in RUN_DIR/final/ (read_final_phase), measured again
// on the test set of `data` (uploaded as `dev`) from their files, into s's final_* fields (evo
// best). Leaves them as they are when the run had none; a damaged retrain.json, or a model whose
// files cannot be read, is named in s.damaged and left out (the chosen one is then the best by
// validation of those that could be measured).
void measure_final_phase(const std::string& run_dir, const Dataset& data,
                         const DeviceDataset& dev, Context& ctx, SearchSummary& s);

}  // namespace evo::detail
