// The evo program: builds the command line from the subcommands of src/cli/ and runs the one
// given (the search when none is), turning errors into messages and exit codes. Not any
// subcommand's options or output: each lives in its own src/cli/NAME.cpp (cli.h says how to add one).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "evo/error.h"

int main(int argc, char** argv) {
  CLI::App app{"evo: evolutionary architecture search of image classifiers (Real et al., ICML 2017),\n"
               "on GPUs or the CPU, with no deep-learning library. With no subcommand: search."};
  app.set_version_flag("--version", std::string("evo ") + EVO_VERSION);
  app.require_subcommand(0, 1);
  app.fallthrough();  // `evo show FILE --json`: subcommands pass --json up to the top level
  evo::cli::Globals globals;
  app.add_flag("--json", globals.json, "Print one JSON object instead of the human summary");

  std::vector<evo::cli::Command> commands;
#define EVO_CLI_ADD(name) commands.push_back(evo::cli::add_##name##_command(app, globals));
  EVO_CLI_COMMANDS(EVO_CLI_ADD)
#undef EVO_CLI_ADD

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version, or the parse error
    return code == 0 ? 0 : evo::cli::kExitUsage;
  }

  try {
    // The subcommand given (at most one), else the search: `evo --gpus 0-7` is a search.
    const evo::cli::Command* chosen = nullptr;
    for (const evo::cli::Command& c : commands)
      if (c.app->parsed()) chosen = &c;
    // The search's options also live on the top level (`evo --gpus 0-7`), and fallthrough hands
    // a subcommand's unknown options up there: without this check `evo train --population 5`
    // would be accepted and ignored.
    if (chosen && chosen->app->get_name() != "search")
      for (const CLI::Option* opt : app.get_options())
        if (opt->count() > 0 && opt->get_name() != "--json")
          throw evo::UsageError(opt->get_name() + " is not an option of evo " +
                                chosen->app->get_name() + " (it belongs to evo search); evo " +
                                chosen->app->get_name() + " --help lists its options");
    for (const evo::cli::Command& c : commands)
      if (!chosen && c.app->get_name() == "search") chosen = &c;
    return chosen->run();
  } catch (const evo::UsageError& e) {
    std::fprintf(stderr, "evo: error: %s\n", e.what());
    return evo::cli::kExitUsage;
  } catch (const evo::Error& e) {
    std::fprintf(stderr, "evo: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "evo: unexpected error: %s\n", e.what());
    return 1;
  }
}
