// evo show: a DNA's layers, shapes, parameters and FLOPs for one input shape, or its Graphviz
// drawing. Not the compiler (dna.h's compile, describe and to_dot do the work).
#include <cstdio>
#include <memory>
#include <string>

#include "cli.h"
#include "evo/dna.h"
#include "evo/error.h"

namespace evo::cli {

namespace {

struct ShowArgs {
  std::string dna;
  std::string input = "28x28x1";  // H x W x C of the images
  int classes = 10;
  bool dot = false;
};

ActShape parse_hwc(const std::string& text) {
  ActShape s;
  char x1 = 0, x2 = 0;
  if (std::sscanf(text.c_str(), "%d%c%d%c%d", &s.h, &x1, &s.w, &x2, &s.c) != 5 || x1 != 'x' ||
      x2 != 'x' || s.h < 1 || s.w < 1 || s.c < 1)
    throw UsageError("--input '" + text + "': expected HxWxC, e.g. 28x28x1 or 32x32x3");
  return s;
}

int run_show(const ShowArgs& cmd, bool json) {
  const ActShape in = parse_hwc(cmd.input);
  const CompiledDna plan = compile(load_dna(cmd.dna), in.h, in.w, in.c, cmd.classes);
  if (cmd.dot) {
    std::printf("%s", to_dot(plan).c_str());
  } else if (json) {
    print_json({{"dna", cmd.dna},
                {"input", cmd.input},
                {"vertices", plan.vertices.size()},
                {"edges", plan.edges.size()},
                {"parameters", plan.param_count},
                {"forward_flops_per_image", plan.forward_flops},
                {"train_flops_per_image", plan.train_flops}});
  } else {
    std::printf("%s", describe(plan).c_str());
  }
  return 0;
}

}  // namespace

Command add_show_command(CLI::App& app, const Globals& globals) {
  const auto a = std::make_shared<ShowArgs>();
  CLI::App* show = app.add_subcommand("show", "Print a DNA: layers, shapes, parameters, FLOPs");
  show->add_option("file", a->dna, "DNA file (JSON)")->required();
  show->add_flag("--dot", a->dot, "Print Graphviz (dot) instead");
  show->add_option("--input", a->input, "Image shape HxWxC")->capture_default_str();
  show->add_option("--classes", a->classes, "Number of classes, 1-100,000")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  return {show, [a, &globals] { return run_show(*a, globals.json); }};
}

}  // namespace evo::cli
