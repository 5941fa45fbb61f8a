// evo mutate: applies one named mutation (or the paper's uniform choice) to a DNA file and prints
// the child, with what changed. Not the mutations (mutation.h returns them; this prints them).
#include <cstdio>
#include <memory>
#include <random>
#include <string>

#include "cli.h"
#include "evo/dna.h"
#include "evo/error.h"
#include "evo/mutation.h"

namespace evo::cli {

namespace {

struct MutateArgs {
  std::string dna, mutation;
  uint64_t seed = 0;
};

// The child DNA's JSON on stdout and "<mutation>: <detail>" on stderr, so `evo mutate A > B`
// writes a loadable DNA; with --json, one object {"mutation", "detail", "reset_weights",
// "child"} on stdout. NAME may also be "random" (the paper's uniform choice, as mutate()).
int run_mutate(const MutateArgs& cmd, bool json) {
  // Check the name before reading the file: a typo is the likelier mistake and the cheaper fix.
  const bool random = cmd.mutation == "random";
  const Mutation m = random ? Mutation::Identity : [&] {
    try {
      return parse_mutation(cmd.mutation);
    } catch (const UsageError& e) {
      throw UsageError(std::string(e.what()) + ", or random (the paper's uniform choice)");
    }
  }();
  const Dna parent = load_dna(cmd.dna);
  std::mt19937_64 rng(cmd.seed);
  MutationResult r;
  try {
    r = random ? mutate(parent, rng) : apply_mutation(parent, m, rng);
  } catch (const MutationNotApplicable& e) {
    throw MutationNotApplicable(cmd.dna + ": " + e.what());  // which file, for people
  }
  if (json) {
    print_json({{"mutation", to_string(r.mutation)},
                {"detail", r.detail},
                {"reset_weights", r.reset_weights},
                {"child", dna_to_json(r.child)}});
  } else {
    std::printf("%s", to_json(r.child).c_str());
    std::fprintf(stderr, "%s: %s\n", to_string(r.mutation), r.detail.c_str());
  }
  return 0;
}

}  // namespace

Command add_mutate_command(CLI::App& app, const Globals& globals) {
  const auto a = std::make_shared<MutateArgs>();
  CLI::App* mutate = app.add_subcommand("mutate", "Apply one named mutation and print the child");
  mutate->add_option("file", a->dna, "DNA file (JSON)")->required();
  std::string names = "random";
  for (Mutation m : all_mutations()) names += std::string(", ") + to_string(m);
  mutate->add_option("--mutation", a->mutation, "One of: " + names)->required();
  add_seed_option(mutate, a->seed, "Random seed");
  return {mutate, [a, &globals] { return run_mutate(*a, globals.json); }};
}

}  // namespace evo::cli
