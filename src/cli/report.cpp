// evo report: the HTML page of one run, or one page comparing several runs; prints the page's
// path. Not the drawing (report.h writes the pages and says which records it left out).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "evo/report.h"

namespace evo::cli {

namespace {

struct ReportArgs {
  std::vector<std::string> run_dirs;
  std::string out;  // "": the writer's default
};

int run_report(const ReportArgs& cmd) {
  const ReportWritten written = cmd.run_dirs.size() == 1
                                    ? write_report(cmd.run_dirs[0], cmd.out)
                                    : write_compare_report(cmd.run_dirs, cmd.out);
  print_damaged("evo report", written.damaged);
  std::printf("%s\n", written.path.c_str());
  return 0;
}

}  // namespace

Command add_report_command(CLI::App& app, const Globals&) {
  const auto a = std::make_shared<ReportArgs>();
  CLI::App* report = app.add_subcommand(
      "report", "Write an HTML page with plots of a run, or one page comparing several runs");
  report
      ->add_option("run_dir", a->run_dirs,
                   "Run folder; with two or more, one page comparing them, grouped by the "
                   "run.json settings that differ (the seed aside)")
      ->required();
  report->add_option("--out", a->out,
                     "Output file (default RUN_DIR/report.html; with several runs, compare.html)");
  return {report, [a] { return run_report(*a); }};
}

}  // namespace evo::cli
