// The paper's eleven mutations (Real et al. 2017, section 3) as named functions on a Dna. Not
// selection or training (the search decides whom to mutate and trains), and not `evo mutate`
// (src/cli/mutate.cpp prints what these return).
//
// Every mutation returns a fresh child and leaves the parent alone. The child keeps every id it
// does not remove and mints new ones from next_id, so inheritance (key and shape unchanged) keeps
// the weights of every layer the mutation did not touch. Choices beyond the paper's text (all in
// data/dna/README.md, "Mutations"):
// - INSERT-CONVOLUTION / INSERT-ONE-TO-ONE at backbone vertex u (uniform over all vertices, the
//   output included): new vertex w and new backbone edge u -> w (3x3, depth factor 1, stride 1 or
//   2; or identity); u's old backbone out-edge keeps its id and now starts at w; skips at u stay at
//   u; when u was the output, w becomes the output. Depth factor 1 keeps every channel count, so
//   every old weight tensor keeps its shape.
// - REMOVE-CONVOLUTION of conv u -> v removes the edge and v: v's backbone out-edge now starts at
//   u; skips from v start at u; skips into v end at v's backbone successor (at u when v was the
//   output, and u becomes the output); a skip that would become a self-loop, or join a pair that
//   another edge (backbone or skip) of the child already joins, is dropped.
// - ADD-SKIP, as the paper's published code: the target vertex first (uniform over those with an
//   eligible source), then a source before it whose pair no edge joins yet; never a skip beside
//   an existing edge.
// - Numbers change "at random around the existing value": learning rate x 2^U(-1, 1); depth factor
//   uniform in [old/2, 2 old]; stride scale +-1; filter size: an odd value other than the old one
//   in [old/2, 2 old] or next to it (old +- 2), so 1 -> 3 and 3 -> 1 or 5. All clamped to dna.h's
//   limits, and a depth factor's range is cut where more would push any vertex above kMaxChannels.
// - Randomness: only rng(), through portable helpers, so `evo mutate --seed N` gives the same
//   child with any standard library.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "evo/dna.h"
#include "evo/error.h"

namespace evo {

enum class Mutation {
  AlterLearningRate,
  Identity,
  ResetWeights,
  InsertConvolution,
  RemoveConvolution,
  AlterStride,
  AlterNumberOfChannels,
  FilterSize,
  InsertOneToOne,
  AddSkip,
  RemoveSkip,
};
inline constexpr int kMutationCount = 11;

// Every mutation, in the paper's order.
const std::vector<Mutation>& all_mutations();

// The command-line spelling: "alter-learning-rate", "identity", "reset-weights",
// "insert-convolution", "remove-convolution", "alter-stride", "alter-number-of-channels",
// "filter-size", "insert-one-to-one", "add-skip", "remove-skip".
const char* to_string(Mutation m);
// Throws UsageError listing every name when `name` is none of them.
Mutation parse_mutation(const std::string& name);

// A mutation that cannot apply to this DNA (no convolution to remove, no skip to remove, every
// forward pair already joined, ...). The message says why; mutate() draws another mutation instead.
class MutationNotApplicable : public Error {
 public:
  explicit MutationNotApplicable(const std::string& what) : Error(what) {}
};

struct MutationResult {
  Dna child;
  Mutation mutation = Mutation::Identity;
  std::string detail;  // for people: "insert conv e12 3x3 stride 2 after v3 (new vertex v11 ...)"
  // RESET-WEIGHTS: the DNA is unchanged but the caller must initialise every weight afresh
  // rather than inherit.
  bool reset_weights = false;
};

// Channel counts are checked for inputs of up to this many channels (every data set evo reads
// has 1 or 3). Channels grow monotonically with the input's, so a child that fits 3 fits 1.
inline constexpr int kMutationInputChannels = 3;

// Whether apply_mutation(parent, m, ...) succeeds (it throws MutationNotApplicable exactly when
// this is false).
bool applicable(const Dna& parent, Mutation m, int input_channels = kMutationInputChannels);

// Applies mutation `m`; the child validates, and compiles for any input of up to
// `input_channels` channels unless the parent already did not. Throws MutationNotApplicable.
MutationResult apply_mutation(const Dna& parent, Mutation m, std::mt19937_64& rng,
                              int input_channels = kMutationInputChannels);

// The paper's rule: one mutation chosen uniformly from the eleven, drawn again while it cannot
// apply (IDENTITY always can).
MutationResult mutate(const Dna& parent, std::mt19937_64& rng,
                      int input_channels = kMutationInputChannels);

}  // namespace evo
