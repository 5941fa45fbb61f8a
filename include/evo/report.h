// The HTML report of a search run (`evo report RUN_DIR`): the paper's Figure 1, best-so-far curves,
// validation accuracy against parameters with its Pareto front, the best individual's DNA as a
// graph and a table of the top individuals, in one offline file;
// and the comparison page of a study (`evo report RUN1 RUN2 ...`): several runs grouped by the
// settings that differ between them. Not the store (population.h) and not the search: it only
// reads what run folders hold.
//
// The page is self-contained: inline CSS and inline SVG drawn here, no script, nothing fetched.
// Hovering a dot, a table row or a DNA vertex shows details through SVG/HTML titles. Individuals
// are alive when IndividualRecord::alive() (death_time NaN); "best" is the highest validation
// accuracy of a child that did not fail, the earliest born on a tie.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "evo/dna.h"
#include "evo/population.h"

namespace evo {

// The colours the plots draw with. Public so that tests can find them in a screenshot; each is
// distinct from the others and from neutral greys (text anti-aliasing), so a pixel of one of them
// can only come from what it marks.
inline constexpr const char* kAliveColour = "#1f77b4";   // Figure 1: alive individuals
inline constexpr const char* kDeadColour = "#a9b1ba";    // Figure 1: killed individuals
inline constexpr const char* kFailedColour = "#d62728";  // Figure 1: rings of failed children
inline constexpr const char* kBestColour = "#2ca02c";    // best-so-far curves
inline constexpr const char* kBnReluColour = "#cfe3f5";  // DNA graph: bn_relu vertices
inline constexpr const char* kLinearColour = "#f6e7c1";  // DNA graph: linear vertices
inline constexpr const char* kSkipColour = "#ff7f0e";    // DNA graph: skip edges

struct ReportOptions {
  std::string title = "evo run";  // the page's heading (write_report: the run folder's path)
  int top = 20;                   // rows in the table of top individuals
  int population_size = 0;        // N of the run, shown beside the alive count; 0: unknown
  // The run's settings as "key: value" lines for the header (write_report: run.json's settings).
  std::vector<std::pair<std::string, std::string>> settings;
  // The DNA to draw (the best individual's, whose id is best_dna_id) and the input it is compiled
  // for. Absent: the page shows best_dna_note (why) instead of the drawing.
  std::optional<Dna> best_dna;
  std::string best_dna_id;
  std::string best_dna_note;
  int height = 28, width = 28, channels = 1, classes = 10;
  // The test-set results a finished search measured (RUN_DIR/final.json, save_final_results):
  // the best individual's (final_best_id) test accuracy and the top-k ensemble's. NaN: none.
  std::string final_best_id;
  double final_best_test = std::numeric_limits<double>::quiet_NaN();
  double final_ensemble_test = std::numeric_limits<double>::quiet_NaN();
  int final_ensemble_size = 0;
  // The run's answer (final.json "answer": "ensemble", "final model" or "best individual") and
  // its test accuracy; empty / NaN for runs from before the answer was recorded.
  std::string final_answer;
  double final_answer_test = std::numeric_limits<double>::quiet_NaN();
  // The run's size limits (evo search --max-params / --max-flops; write_report: run.json's
  // settings "max_params" and "max_flops"); 0: none. The accuracy-against-parameters plot draws
  // max_params as a dashed line; max_flops has no line there (its x is parameters) and shows in
  // the settings header only.
  int64_t max_params = 0;
  double max_flops = 0;
  // What `evo retrain` measured (RUN_DIR/final/retrain.json; write_report reads it): one row per
  // retrained individual, the ensemble's test accuracy and how they were trained. No rows: the
  // page has no such section.
  struct Retrained {
    std::string id;
    int64_t parameters = 0;
    double test_before = std::numeric_limits<double>::quiet_NaN();
    double test_after = std::numeric_limits<double>::quiet_NaN();
    double val_after = std::numeric_limits<double>::quiet_NaN();
    int steps = 0;
    bool failed = false;
  };
  std::vector<Retrained> retrained;
  double retrained_ensemble_test = std::numeric_limits<double>::quiet_NaN();
  std::string retrained_how;  // "25600 steps of batch 50 from its weights on cuda:0,cuda:1 ..."
  bool retrained_by_search = false;  // final/ is the search's final phase, not evo retrain's
  // Unix seconds shown as the generation time; NaN: now. Fixed in tests for reproducible output.
  double generated_at = std::numeric_limits<double>::quiet_NaN();
};

// The Pareto front of validation accuracy against size that the report draws: indexes into
// `individuals` of those it can plot (not failed, params > 0, finite fitness) that no other such
// individual dominates, i.e. none has params <= and fitness >= with one of the two strict. Sorted
// by params, then index; identical (params, fitness) pairs are all kept. Along the front params
// and fitness both rise, so each entry is the most accurate individual within its size.
std::vector<std::size_t> pareto_front(const std::vector<IndividualRecord>& individuals);

// The whole HTML page for these individuals. Never throws for odd data (no individuals, NaNs,
// a DNA that does not compile for the input): the page says what is missing instead.
std::string render_report(const std::vector<IndividualRecord>& individuals,
                          const ReportOptions& opts = {});

// What write_report and write_compare_report did: where the page is, and the records they left
// out because they could not be read ("<path>: <reason>"; the page is drawn without them). They
// print nothing: `evo report` and `evo search` print these lines.
struct ReportWritten {
  std::string path;
  std::vector<std::string> damaged;
  std::string trials_path;  // write_report: RUN_DIR/trials.csv ("" when it could not be written)
};

// The trial log of a run: one CSV row per individual ever trained, by birth (RFC 4180: a header
// row; fields with a comma, quote or line break quoted, quotes doubled; a value not measured is
// empty). Columns: id, parent, mutation, born_s (seconds since the run's first birth),
// birth_time and death_time (Unix seconds), alive, failed, val_accuracy, test_accuracy, params,
// steps, train_seconds, flops (training + validation), learning_rate, worker, host, killed_by,
// failure, detail. Loads as it is in pandas (pd.read_csv) or a spreadsheet.
std::string trials_csv(const std::vector<IndividualRecord>& individuals);

// Reads the run folder (its individuals, run.json's settings with the input shape and classes, the
// best individual's DNA) and writes render_report's page to out_path atomically (a temporary file
// in the same folder, then rename), so a browser or a second writer never sees half a page.
// out_path "" is default_report_path(run_dir): this is the one place the default is chosen, so
// callers print the returned path. It also writes trials_csv's log to RUN_DIR/trials.csv (also
// atomically; a run folder it cannot write into is named in `damaged`, the page still written).
// Throws evo::Error when run_dir is not a run folder or the page cannot be written.
ReportWritten write_report(const std::string& run_dir, const std::string& out_path = "");

// What the end of a search measured on the test set, kept in RUN_DIR/final.json (written
// atomically) so that the report shows it: the best individual's test accuracy and the top-k
// ensemble's, and `extra`'s keys (the final phase's: final_test_accuracy, ...). write_report reads
// it back; a later search overwrites it.
void save_final_results(const std::string& run_dir, const std::string& best_id, double best_test,
                        double ensemble_test, int ensemble_size,
                        const nlohmann::json& extra = nlohmann::json::object());

// The default output path of write_report: RUN_DIR/report.html.
std::string default_report_path(const std::string& run_dir);

// ---- comparing runs (a study) ------------------------------------------------------------------

// One run of a comparison, as write_compare_report reads it from a run folder.
struct CompareRun {
  std::string name;  // how the page names the run (write_compare_report: the folder as given)
  // run.json's settings plus "population" (its population_size). Keys whose values differ
  // between the runs define the groups ("settings") of the page, except kCompareIgnored ones.
  nlohmann::json settings = nlohmann::json::object();
  std::vector<IndividualRecord> individuals;
  // RUN_DIR/final.json (save_final_results); NaN: absent. The best's test accuracy falls back on
  // the best record's own test_accuracy when final.json has none.
  double final_best_test = std::numeric_limits<double>::quiet_NaN();
  double final_ensemble_test = std::numeric_limits<double>::quiet_NaN();
};

// Settings that never define a group: runs that differ only in these are repeats of one setting.
inline const std::vector<std::string> kCompareIgnored = {"seed", "run_dir"};

struct CompareOptions {
  std::string title = "evo study";
  // Unix seconds shown as the generation time; NaN: now. Fixed in tests for reproducible output.
  double generated_at = std::numeric_limits<double>::quiet_NaN();
};

// The comparison page: best validation accuracy so far against time since each run started
// (its first child's birth minus that child's training time) and against cumulative FLOPs, one
// thin line per run, one colour per setting, each setting's mean drawn thick over the range every
// run of it covers, with its min-max band shaded; then a table per setting (n, mean +- sample sd
// of the best validation accuracy, the best's and the ensemble's test accuracy, children,
// children per hour, total FLOPs) with one row per run under it. Every statistic cell carries
// data-mean, data-sd and data-n attributes (sd: n - 1 in the denominator; absent below 2 values).
// Never throws for odd data (no runs, no individuals, NaNs, settings that are not an object).
std::string render_compare_report(const std::vector<CompareRun>& runs,
                                  const CompareOptions& opts = {});

// The default output path of write_compare_report: compare.html in the current folder (a study
// has no one run folder to put it in).
inline constexpr const char* kDefaultComparePath = "compare.html";

// Reads each run folder (records, run.json, final.json) and writes render_compare_report's page to
// out_path ("" = kDefaultComparePath) atomically, as write_report does; returns the path and the
// records left out. Throws evo::Error naming the folder when one is not a run folder, and when
// run_dirs is empty or the page cannot be written.
ReportWritten write_compare_report(const std::vector<std::string>& run_dirs,
                                   const std::string& out_path = "");

}  // namespace evo
