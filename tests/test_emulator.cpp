// Tests of the CUDA emulator: example kernels against plain CPU loops (emulated, and on a GPU when
// one is visible), what a GPU would hang or fail on, shuffle semantics, the runtime and cuBLAS
// shims, the emulated NCCL. Not benchmarks: emulated speed is measured, never asserted.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "cuda/emu/nccl.h"
#include "cuda/emu/runtime.h"
#include "cuda/examples/examples.h"
#include "evo/error.h"
#include "support.h"

using namespace evo;
using Catch::Matchers::Contains;

namespace {

// The example wrappers of one build (the signatures are the same in both namespaces).
struct Api {
  const char* name;
  decltype(&emu::examples::reduce_sum) reduce_sum;
  decltype(&emu::examples::tiled_matmul) tiled_matmul;
  decltype(&emu::examples::histogram) histogram;
  decltype(&emu::examples::vote) vote;
  decltype(&emu::examples::shuffle) shuffle;
  decltype(&emu::examples::split_warp_shuffle) split_warp_shuffle;
  decltype(&emu::examples::partial_warp_shuffle) partial_warp_shuffle;
  decltype(&emu::examples::thread_indices) thread_indices;
  decltype(&emu::examples::atomics) atomics;
  decltype(&emu::examples::shared_isolation) shared_isolation;
  decltype(&emu::examples::empty_launch) empty_launch;
  decltype(&emu::examples::stream_sequence) stream_sequence;
  decltype(&emu::examples::graph_accumulate) graph_accumulate;
  decltype(&emu::examples::capture_rule) capture_rule;
};
#define EVO_EXAMPLES_API(label, ns)                                                           \
  Api {                                                                                       \
    label, &ns::examples::reduce_sum, &ns::examples::tiled_matmul, &ns::examples::histogram,  \
        &ns::examples::vote, &ns::examples::shuffle, &ns::examples::split_warp_shuffle,       \
        &ns::examples::partial_warp_shuffle, &ns::examples::thread_indices,                   \
        &ns::examples::atomics, &ns::examples::shared_isolation, &ns::examples::empty_launch, \
        &ns::examples::stream_sequence, &ns::examples::graph_accumulate,                      \
        &ns::examples::capture_rule                                                           \
  }

// The emulator always; the real GPU too when this build has CUDA and the machine has a GPU.
std::vector<Api> apis() {
  std::vector<Api> v{EVO_EXAMPLES_API("emu", evo::emu)};
#if defined(EVO_HAVE_CUDA)
  if (cuda::examples::device_count() > 0) v.push_back(EVO_EXAMPLES_API("cuda", evo::cuda));
#endif
  return v;
}

int uniform_int(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(test::rng());
}

// Forgets injected and sticky errors when a test ends, however it ends: a poisoned emulated device
// would fail every test after it.
struct ResetErrorsAtExit {
  ResetErrorsAtExit() { emu::reset_errors(); }
  ~ResetErrorsAtExit() { emu::reset_errors(); }
};

// Runs the emulator under one schedule for a scope, then restores the one before (the tests run
// under EVO_EMU_SCHEDULE=reverse and random:SEED in CI too: tools/test.sh).
class ScopedSchedule {
 public:
  explicit ScopedSchedule(const emu::Schedule& s) : saved_(emu::current_schedule()) {
    emu::set_schedule(s);
  }
  ~ScopedSchedule() { emu::set_schedule(saved_); }
  ScopedSchedule(const ScopedSchedule&) = delete;
  ScopedSchedule& operator=(const ScopedSchedule&) = delete;

 private:
  emu::Schedule saved_;
};

// Forward, reverse, and random with a seed drawn from the test's seed (so that Catch's printed
// --rng-seed repeats it); schedule_name() says which, for INFO.
std::vector<emu::Schedule> every_order() {
  const std::uint64_t seed = std::uniform_int_distribution<std::uint64_t>(0, 1u << 30)(test::rng());
  return {emu::Schedule{emu::ScheduleOrder::Forward, 0},
          emu::Schedule{emu::ScheduleOrder::Reverse, 0},
          emu::Schedule{emu::ScheduleOrder::Random, seed}};
}

}  // namespace

TEST_CASE("shared-memory tree reduction finished with warp shuffles", "[emulator]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      for (int threads : {64, 256, 1024}) {
        const int blocks = uniform_int(1, 40);
        const int n = uniform_int(1, 60000);
        const std::vector<float> x = test::random_vector(std::size_t(n));
        std::vector<double> ref(std::size_t(blocks), 0.0);
        for (int i = 0; i < n; ++i) ref[std::size_t(i / threads % blocks)] += x[std::size_t(i)];
        INFO("threads " << threads << ", blocks " << blocks << ", n " << n);
        CHECK(test::all_close(api.reduce_sum(x, blocks, threads), ref, 1e-3, 1e-4, "block sums"));
      }
    }
  }
}

TEST_CASE("shared-memory tiled matrix multiply", "[emulator]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      for (int rep = 0; rep < 4; ++rep) {
        // Sizes that are not multiples of the 16 x 16 tile exercise the edge guards.
        const int m = uniform_int(1, 70), n = uniform_int(1, 70), k = uniform_int(1, 90);
        const std::vector<float> a = test::random_vector(std::size_t(m) * k);
        const std::vector<float> b = test::random_vector(std::size_t(k) * n);
        std::vector<double> ref(std::size_t(m) * n, 0.0);
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < n; ++j)
            for (int p = 0; p < k; ++p)
              ref[std::size_t(i) * n + j] +=
                  double(a[std::size_t(i) * k + p]) * b[std::size_t(p) * n + j];
        INFO("m " << m << ", n " << n << ", k " << k);
        CHECK(test::all_close(api.tiled_matmul(a, b, m, n, k), ref, 1e-4, 1e-4, "C"));
      }
    }
  }
}

TEST_CASE("histogram with shared and global atomics", "[emulator]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      const int bins = uniform_int(1, 4096);
      const int n = uniform_int(1000, 80000);
      std::vector<unsigned> x(static_cast<std::size_t>(n));
      for (unsigned& v : x) v = unsigned(uniform_int(0, bins - 1));
      std::vector<unsigned> ref(std::size_t(bins), 0);
      for (unsigned v : x) ++ref[v];
      INFO("bins " << bins << ", n " << n);
      CHECK(api.histogram(x, bins, uniform_int(1, 48), 256, false) == ref);
    }
  }
}

TEST_CASE("dynamic shared memory beyond 48 KiB needs the opt-in attribute", "[emulator]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      const int bins = 20000;  // 80,000 bytes of dynamic shared memory
      std::vector<unsigned> x(50000);
      for (unsigned& v : x) v = unsigned(uniform_int(0, bins - 1));
      std::vector<unsigned> ref(bins, 0);
      for (unsigned v : x) ++ref[v];
      // Before the opt-in (the attribute sticks to the kernel afterwards, as on a GPU).
      CHECK_THROWS_AS(api.histogram(x, bins, 8, 256, false), evo::Error);
      CHECK(api.histogram(x, bins, 8, 256, true) == ref);
      CHECK_THROWS_AS(api.empty_launch(32, 1, 1, 48 * 1024 + 1), evo::Error);
      CHECK_NOTHROW(api.empty_launch(32, 1, 1, 48 * 1024));
    }
  }
}

TEST_CASE("ballot, any, all and __syncthreads_count", "[emulator]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      const int threads = uniform_int(0, 1) ? 64 : 256;
      const int n = uniform_int(100, 5000);  // usually not a multiple of 32: a partial last warp
      // Per warp, all above, all below, or mixed: so that any and all are both 0 and 1 somewhere.
      const float threshold = std::uniform_real_distribution<float>(-0.5f, 0.5f)(test::rng());
      std::vector<float> x = test::random_vector(std::size_t(n));
      for (int w = 0; w * 32 < n; ++w) {
        const int kind = uniform_int(0, 2);
        for (int i = w * 32; i < std::min(n, w * 32 + 32); ++i)
          if (kind == 0)
            x[std::size_t(i)] = threshold + 0.25f + std::fabs(x[std::size_t(i)]);
          else if (kind == 1)
            x[std::size_t(i)] = threshold - 0.25f - std::fabs(x[std::size_t(i)]);
      }
      std::vector<unsigned> ballot;
      std::vector<int> any, all, count;
      api.vote(x, threshold, threads, ballot, any, all, count);

      const int blocks = (n + threads - 1) / threads;
      REQUIRE(ballot.size() == std::size_t(blocks * threads / 32));
      REQUIRE(count.size() == std::size_t(blocks));
      std::vector<int> ref_count(std::size_t(blocks), 0);
      int mismatches = 0;
      for (int w = 0; w < blocks * threads / 32; ++w) {
        unsigned mask = 0;
        for (int l = 0; l < 32; ++l) {
          const int i = w * 32 + l;
          const bool pred = i < n && x[std::size_t(i)] > threshold;
          if (pred) {
            mask |= 1u << l;
            ++ref_count[std::size_t(i / threads)];
          }
        }
        if (ballot[std::size_t(w)] != mask || any[std::size_t(w)] != (mask != 0) ||
            all[std::size_t(w)] != (mask == 0xffffffffu)) {
          if (++mismatches <= 5)
            std::printf("warp %d: ballot %08x any %d all %d, expected %08x %d %d\n", w,
                        ballot[std::size_t(w)], any[std::size_t(w)], all[std::size_t(w)], mask,
                        mask != 0, mask == 0xffffffffu);
        }
      }
      CHECK(mismatches == 0);
      CHECK(count == ref_count);
    }
  }
}

TEST_CASE("shuffle semantics: idx, up, down, xor with every width", "[emulator]") {
  // The reference is the CUDA Programming Guide's wording, written independently of the
  // emulator's PTX-style lane arithmetic: `width` splits a warp into independent subsections.
  auto reference = [](const std::vector<float>& x, int op, int param, int width) {
    std::vector<float> out(x.size());
    for (int t = 0; t < int(x.size()); ++t) {
      const int lane = t % 32, warp_base = t - lane, sub = lane / width * width;
      int src = lane;
      switch (op) {
        case 0:
          src = sub + ((param % width) + width) % width;
          break;  // srcLane modulo width
        case 1:
          src = lane - sub >= param ? lane - param : lane;
          break;  // not below the subsection
        case 2:
          src = lane - sub + param < width ? lane + param : lane;
          break;  // nor above it
        default: {
          const int s = lane ^ param;  // later subsections are out of reach: own value
          src = s / width > lane / width ? lane : s;
        }
      }
      out[std::size_t(t)] = x[std::size_t(warp_base + src)];
    }
    return out;
  };
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      const std::vector<float> x = test::random_vector(64);  // two warps: they must not mix
      int failures = 0;
      for (int width : {1, 2, 4, 8, 16, 32}) {
        for (int param = -40; param <= 40; param += 3)
          failures += !test::all_close(
              api.shuffle(x, 0, param, width), reference(x, 0, param, width), 0, 0,
              "shfl width " + std::to_string(width) + " src " + std::to_string(param));
        for (int op = 1; op <= 3; ++op)
          for (int param = 0; param < 32; ++param)
            failures += !test::all_close(
                api.shuffle(x, op, param, width), reference(x, op, param, width), 0, 0,
                "op " + std::to_string(op) + " width " + std::to_string(width) + " param " +
                    std::to_string(param));
      }
      CHECK(failures == 0);
    }
  }
}

TEST_CASE("warp groups: split masks, partial warps, lane numbering in 3-D blocks", "[emulator]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      {
        const std::vector<float> x = test::random_vector(96);
        std::vector<float> ref(x.size());
        for (std::size_t t = 0; t < x.size(); ++t) ref[t] = x[t % 32 < 16 ? t ^ 1 : t ^ 2];
        CHECK(test::all_close(api.split_warp_shuffle(x), ref, 0, 0, "split warp"));
      }
      {
        const int n = 32 + uniform_int(1, 31), delta = uniform_int(1, 16);
        const std::vector<float> x = test::random_vector(std::size_t(n));
        const std::vector<float> out = api.partial_warp_shuffle(x, delta);
        std::vector<float> got, ref;
        for (int t = 0; t < n; ++t) {
          const int src = t % 32 + delta < 32 ? t + delta : t;
          if (src < n) {  // reading a lane past the block's end is undefined: not compared
            got.push_back(out[std::size_t(t)]);
            ref.push_back(x[std::size_t(src)]);
          } else if (std::string(api.name) == "emu") {
            CHECK(std::isnan(out[std::size_t(t)]));  // the emulator makes it visible
          }
        }
        INFO("n " << n << ", delta " << delta);
        CHECK(test::all_close(got, ref, 0, 0, "partial warp"));
      }
      {
        const int gx = 3, gy = 2, gz = 2, bx = 5, by = 3, bz = 4;  // 60 threads: 2 warps, 1 partial
        const std::vector<int> got = api.thread_indices(gx, gy, gz, bx, by, bz);
        std::vector<int> ref;
        for (int b = 0; b < gx * gy * gz; ++b)
          for (int t = 0; t < bx * by * bz; ++t)
            ref.insert(ref.end(), {t % bx, t / bx % by, t / (bx * by), b % gx, b / gx % gy,
                                   b / (gx * gy), t - t % 32});
        CHECK(got == ref);
      }
    }
  }
}

TEST_CASE("atomics from many blocks in parallel", "[emulator]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      const int n = uniform_int(10000, 60000);
      std::vector<int> x(static_cast<std::size_t>(n));
      for (int& v : x) v = uniform_int(-1000, 1000);
      long long sum = 0;
      double float_sum = 0;
      for (int v : x) {
        sum += v;
        float_sum += v / 8.0;
      }
      const std::vector<double> got = api.atomics(x, uniform_int(16, 96), 256);
      REQUIRE(got.size() == 6);
      CHECK(got[0] == double(sum));
      CHECK(got[1] == *std::max_element(x.begin(), x.end()));
      CHECK(got[2] == *std::min_element(x.begin(), x.end()));
      CHECK(got[3] == double(sum));
      // Float atomics add in whatever order the blocks run: close, not exact.
      CHECK(std::fabs(got[4] - float_sum) <= 2.0 + 1e-5 * std::fabs(float_sum));
      CHECK(got[5] == n % 1000);
    }
  }
}

TEST_CASE("static __shared__ belongs to one block, even with blocks running concurrently",
          "[emulator]") {
  emu::reset_emu_stats();
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      const std::vector<int> ok = api.shared_isolation(12, 256, 2'000'000);
      CHECK(std::count(ok.begin(), ok.end(), 1) == long(ok.size()));
    }
  }
  const emu::EmuStats stats = emu::emu_stats();
  if (stats.host_threads >= 2) CHECK(stats.max_concurrent_blocks >= 2);
}

TEST_CASE("launch limits a GPU enforces: threads per block and block shape", "[emulator]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      CHECK_NOTHROW(api.empty_launch(1024, 1, 1, 0));
      CHECK_NOTHROW(api.empty_launch(32, 32, 1, 0));
      CHECK_THROWS_AS(api.empty_launch(32, 33, 1, 0), evo::Error);  // 1056 threads
      CHECK_THROWS_AS(api.empty_launch(1025, 1, 1, 0), evo::Error);
      CHECK_THROWS_AS(api.empty_launch(1, 1, 65, 0), evo::Error);
      CHECK_THROWS_AS(api.empty_launch(0, 1, 1, 0), evo::Error);
    }
  }
  CHECK_THROWS_WITH(emu::examples::empty_launch(16, 16, 8, 0),
                    Contains("2048 threads") && Contains("empty_kernel"));
}

TEST_CASE("a barrier some threads never reach is an error, not a hang", "[emulator]") {
  // Emulator only: on a GPU these kernels hang or corrupt the block. Which thread the messages
  // name depends on the order; they are checked in forward order, the error itself in every one.
  for (const emu::Schedule& s : every_order()) {
    ScopedSchedule order(s);
    INFO("schedule " << emu::schedule_name(s));
    for (int mode : {0, 1, 2, 3})
      CHECK_THROWS_AS(emu::examples::broken_barrier(mode, 2, 64, 16), emu::EmuError);
  }
  ScopedSchedule forward(emu::Schedule{emu::ScheduleOrder::Forward, 0});
  SECTION("threads return early before a __syncthreads") {
    CHECK_THROWS_WITH(emu::examples::broken_barrier(0, 3, 64, 40),
                      Contains("broken_barrier_kernel") && Contains("block (0,0,0)") &&
                          Contains("thread 40 exited while 40 threads wait at __syncthreads"));
  }
  SECTION("threads reach a __syncthreads after others returned") {
    CHECK_THROWS_WITH(emu::examples::broken_barrier(3, 2, 96, 8),
                      Contains("thread 8 reached __syncthreads after thread 0 exited"));
  }
  SECTION("__syncthreads inside a branch") {
    CHECK_THROWS_AS(emu::examples::broken_barrier(1, 5, 128, 16), emu::EmuError);
    CHECK_THROWS_WITH(emu::examples::broken_barrier(1, 1, 128, 16),
                      Contains("block (0,0,0)") && Contains("__syncthreads"));
  }
  SECTION("a full-mask shuffle while the rest of the warp waits at __syncthreads") {
    CHECK_THROWS_WITH(emu::examples::broken_barrier(2, 2, 64, 16),
                      Contains("deadlock") && Contains("__shfl_sync") &&
                          Contains("threads 0-15 wait") && Contains("broken_barrier_kernel"));
  }
  // The emulator is still usable afterwards (stacks and state were recovered).
  const std::vector<float> x = test::random_vector(5000);
  double ref = 0;
  for (float v : x) ref += v;
  CHECK(
      test::all_close(emu::examples::reduce_sum(x, 1, 256), std::vector<double>{ref}, 1e-3, 1e-4));
}

TEST_CASE("threads at two different __syncthreads calls: an error naming both", "[emulator]") {
  // CUDA leaves it undefined (a GPU may hang, or let the two groups pass each other); an emulator
  // that only counted arrivals, at whichever barrier, would let it pass.
  for (const emu::Schedule& s : every_order()) {
    ScopedSchedule order(s);
    const int threads = 32 * uniform_int(1, 8), active = uniform_int(1, threads - 1);
    INFO("schedule " << emu::schedule_name(s) << ", threads " << threads << ", active " << active);
    std::string message;
    try {
      emu::examples::broken_barrier(4, 3, threads, active);
    } catch (const emu::EmuError& e) {
      message = e.what();
    }
    INFO(message);
    REQUIRE_THAT(message, Contains("broken_barrier_kernel") && Contains("block (0,0,0)") &&
                              Contains("reached the __syncthreads at") &&
                              Contains("move the barrier out of the branch"));
    // Both sites, as file:line: read the lines back from the source and check that they are the
    // two barriers of the if and of the else.
    std::vector<std::pair<std::string, int>> sites;  // "/path/examples.cu:123" -> (path, 123)
    const std::string name = "examples.cu:";
    for (std::size_t at = message.find(name); at != std::string::npos;
         at = message.find(name, at + 1)) {
      const std::size_t begin = message.rfind(' ', at) + 1, digits = at + name.size();
      const std::size_t end = message.find_first_not_of("0123456789", digits);
      if (end > digits)
        sites.emplace_back(message.substr(begin, digits - 1 - begin),
                           std::stoi(message.substr(digits, end - digits)));
    }
    REQUIRE(sites.size() >= 2);
    CHECK(sites[0].first == sites[1].first);
    CHECK(std::abs(sites[0].second - sites[1].second) == 2);  // if { barrier } else { barrier }
    std::ifstream source(sites[0].first);
    REQUIRE(source);
    std::vector<std::string> lines;
    for (std::string line; std::getline(source, line);) lines.push_back(line);
    for (int k = 0; k < 2; ++k) {
      REQUIRE(sites[std::size_t(k)].second <= int(lines.size()));
      CHECK_THAT(lines[std::size_t(sites[std::size_t(k)].second - 1)],
                 Contains("__syncthreads();"));
    }
    // The threads waiting are named too: in forward order the first `active` ones.
    if (s.order == emu::ScheduleOrder::Forward)
      CHECK_THAT(message, Contains("thread " + std::to_string(active) + " reached") &&
                              Contains(std::to_string(active) + " threads (0" +
                                       (active > 1 ? "-" + std::to_string(active - 1) : "") + ")"));
  }
}

TEST_CASE("the schedule: forward, reverse and seeded random orders", "[emulator]") {
  const int blocks = 3, threads = 32 * uniform_int(2, 8), phases = 3;
  auto run = [&](const emu::Schedule& s) {
    ScopedSchedule order(s);
    return emu::examples::arrival_order(blocks, threads, phases);
  };
  auto place = [&](const std::vector<int>& order, int b, int p, int t) {
    return order[(std::size_t(b) * phases + std::size_t(p)) * threads + std::size_t(t)];
  };
  INFO("threads " << threads);
  // Every phase of every block is a permutation, whatever the order: each thread passes once.
  auto permutations = [&](const std::vector<int>& order) {
    for (int b = 0; b < blocks; ++b)
      for (int p = 0; p < phases; ++p) {
        std::vector<int> seen(std::size_t(threads), 0);
        for (int t = 0; t < threads; ++t) {
          const int k = place(order, b, p, t);
          if (k < 0 || k >= threads || seen[std::size_t(k)]++) return false;
        }
      }
    return true;
  };

  const std::vector<int> forward = run({emu::ScheduleOrder::Forward, 0});
  const std::vector<int> reverse = run({emu::ScheduleOrder::Reverse, 0});
  REQUIRE(permutations(forward));
  REQUIRE(permutations(reverse));
  int wrong = 0;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) {
      // Forward: thread order; after a barrier the thread that opened it (the last) goes first.
      wrong += place(forward, b, 0, t) != t;
      wrong += place(forward, b, 1, t) != (t == threads - 1 ? 0 : t + 1);
      // Reverse: the mirror image.
      wrong += place(reverse, b, 0, t) != threads - 1 - t;
      wrong += place(reverse, b, 1, t) != (t == 0 ? 0 : threads - t);
    }
  CHECK(wrong == 0);

  const std::uint64_t seed = std::uniform_int_distribution<std::uint64_t>()(test::rng());
  INFO("random seeds " << seed << " and " << seed + 1);
  const std::vector<int> random = run({emu::ScheduleOrder::Random, seed});
  REQUIRE(permutations(random));
  CHECK(run({emu::ScheduleOrder::Random, seed}) == random);  // reproducible
  CHECK(run({emu::ScheduleOrder::Random, seed + 1}) != random);
  CHECK(random != forward);
  CHECK(random != reverse);
  // Each block (its generator is seeded from its index, whichever host thread runs it) and each
  // phase gets its own order: among at least 64! permutations, equal ones mean a bug.
  const auto phase = [&](int b, int p) {
    const auto first = random.begin() + std::ptrdiff_t((b * phases + p) * threads);
    return std::vector<int>(first, first + threads);
  };
  CHECK(phase(0, 0) != phase(1, 0));
  CHECK(phase(0, 0) != phase(0, 1));
}

TEST_CASE("a missing __syncthreads: right in forward order, caught by reverse and random",
          "[emulator]") {
  const int threads = 32 * uniform_int(1, 8);
  const int n = uniform_int(threads + 1, 20 * threads);
  const std::vector<float> x = test::random_vector(std::size_t(n));
  std::vector<double> ref(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    ref[std::size_t(i)] =
        i % threads ? double(x[std::size_t(i - 1)] + x[std::size_t(i)]) : double(x[std::size_t(i)]);
  INFO("threads " << threads << ", n " << n);
  for (const emu::Schedule& s : every_order()) {
    ScopedSchedule order(s);
    INFO("schedule " << emu::schedule_name(s));
    // With the barrier, every order gives the same, right answer.
    CHECK(
        test::all_close(emu::examples::neighbour_sum(x, threads, true), ref, 0, 0, "with barrier"));
    const std::vector<float> racy = emu::examples::neighbour_sum(x, threads, false);
    if (s.order == emu::ScheduleOrder::Forward) {
      // The race hides: each thread runs to its end before the next starts.
      CHECK(test::all_close(racy, ref, 0, 0, "without barrier, forward"));
    } else {
      // Threads read their neighbour's slot before it is written: fresh shared memory, NaN.
      std::size_t nan = 0;
      for (float v : racy) nan += std::isnan(v);
      if (s.order == emu::ScheduleOrder::Reverse)
        CHECK(nan == std::size_t(n - (n + threads - 1) / threads));  // all but the blocks' first
      else
        CHECK(nan > 0);
    }
  }
}

TEST_CASE("correct kernels give bit-identical results under every order", "[emulator]") {
  const std::vector<float> x = test::random_vector(std::size_t(uniform_int(1000, 30000)));
  const int m = uniform_int(1, 50), n = uniform_int(1, 50), k = uniform_int(1, 60);
  const std::vector<float> a = test::random_vector(std::size_t(m) * k);
  const std::vector<float> b = test::random_vector(std::size_t(k) * n);
  const int bins = uniform_int(1, 2000);
  std::vector<unsigned> values(x.size());
  for (unsigned& v : values) v = unsigned(uniform_int(0, bins - 1));
  INFO("x " << x.size() << ", m " << m << ", n " << n << ", k " << k << ", bins " << bins);

  struct Results {
    std::vector<float> sums, product, neighbours;
    std::vector<unsigned> counts, ballot;
    std::vector<int> any, all, block_count;
  };
  auto run = [&](const emu::Schedule& s) {
    ScopedSchedule order(s);
    Results r;
    r.sums = emu::examples::reduce_sum(x, 7, 256);
    r.product = emu::examples::tiled_matmul(a, b, m, n, k);
    r.neighbours = emu::examples::neighbour_sum(x, 128, true);
    r.counts = emu::examples::histogram(values, bins, 5, 256, false);
    emu::examples::vote(x, 0.1f, 128, r.ballot, r.any, r.all, r.block_count);
    return r;
  };
  const std::vector<emu::Schedule> orders = every_order();
  const Results first = run(orders[0]);
  for (std::size_t i = 1; i < orders.size(); ++i) {
    INFO("schedule " << emu::schedule_name(orders[i]) << " against forward");
    const Results r = run(orders[i]);
    // Bit for bit: memcmp-equal floats (== would also pass -0 against +0).
    auto same_bits = [](const std::vector<float>& u, const std::vector<float>& v) {
      return u.size() == v.size() && std::memcmp(u.data(), v.data(), u.size() * sizeof(float)) == 0;
    };
    CHECK(same_bits(r.sums, first.sums));
    CHECK(same_bits(r.product, first.product));
    CHECK(same_bits(r.neighbours, first.neighbours));
    CHECK(r.counts == first.counts);
    CHECK(r.ballot == first.ballot);
    CHECK(r.any == first.any);
    CHECK(r.all == first.all);
    CHECK(r.block_count == first.block_count);
  }
}

TEST_CASE("schedule names: what EVO_EMU_SCHEDULE accepts", "[emulator]") {
  CHECK(emu::parse_schedule("forward").order == emu::ScheduleOrder::Forward);
  CHECK(emu::parse_schedule("reverse").order == emu::ScheduleOrder::Reverse);
  const emu::Schedule r = emu::parse_schedule("random:18446744073709551615");
  CHECK(r.order == emu::ScheduleOrder::Random);
  CHECK(r.seed == 18446744073709551615ull);
  CHECK(emu::schedule_name(emu::parse_schedule("random:42")) == "random:42");
  CHECK(emu::parse_schedule("random").order == emu::ScheduleOrder::Random);
  for (const char* bad : {"", "Forward", "backward", "random:", "random:-1", "random:12x",
                          "random:18446744073709551616", "random: 5"})
    CHECK_THROWS_WITH(emu::parse_schedule(bad),
                      Contains("is not one the emulator knows") && Contains("random:SEED"));
}

TEST_CASE("kernels launched from several host threads at once", "[emulator]") {
  // Like the search's workers: each launches on its own while the block pool is shared.
  const std::vector<float> x = test::random_vector(30000);
  std::vector<double> ref(7, 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) ref[i / 128 % 7] += x[i];
  std::vector<int> good(3, 0);
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w)
    workers.emplace_back([&, w] {
      for (int rep = 0; rep < 20; ++rep)
        good[std::size_t(w)] +=
            test::all_close(emu::examples::reduce_sum(x, 7, 128), ref, 1e-3, 1e-4);
    });
  for (std::thread& t : workers) t.join();
  CHECK(good == std::vector<int>{20, 20, 20});
}

TEST_CASE("emulated runtime reports what a GPU would reject", "[emulator]") {
  using namespace evo::emu;
  float* d = nullptr;
  REQUIRE(cudaMalloc(&d, 64 * sizeof(float)) == cudaSuccess);
  std::vector<float> h(64, 1.f);
  // Fresh device memory is garbage on a GPU; the emulator fills it with NaN.
  std::vector<float> fresh(64, 0.f);
  REQUIRE(cudaMemcpy(fresh.data(), d, 256, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(std::isnan(fresh[0]));
  CHECK(cudaMemcpy(d, h.data(), 256, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemcpy(h.data(), d, 256, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // swapped
  CHECK_THAT(cudaGetErrorString(cudaGetLastError()), Contains("is not device memory"));
  CHECK(cudaMemcpy(d + 1, h.data(), 256, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK_THAT(cudaGetErrorString(cudaErrorInvalidValue), Contains("run past the end"));
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);  // reading the error clears it
  CHECK(cudaMemset(d, 0, 257) == cudaErrorInvalidValue);
  CHECK(cudaFree(d) == cudaSuccess);
  CHECK(cudaFree(d) == cudaErrorInvalidValue);  // freed twice
  (void)cudaGetLastError();

  cudaStream_t s = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaEventCreate(&e0) == cudaSuccess);
  REQUIRE(cudaEventCreate(&e1) == cudaSuccess);
  CHECK(cudaEventRecord(e0, s) == cudaSuccess);
  CHECK(cudaEventRecord(e1, s) == cudaSuccess);
  float ms = -1.f;
  CHECK(cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess);
  CHECK(ms >= 0.f);
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(cudaEventDestroy(e0) == cudaSuccess);
  CHECK(cudaEventDestroy(e1) == cudaSuccess);
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();

  int count = 0;
  CHECK(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK(count >= 1);
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  CHECK(prop.warpSize == 32);
  CHECK(prop.maxThreadsPerBlock == 1024);
  CHECK(cudaSetDevice(count) == cudaErrorInvalidDevice);
  (void)cudaGetLastError();
}

TEST_CASE("cuBLAS SGEMM shim matches naive column-major loops for every transpose", "[emulator]") {
  using namespace evo::emu;
  cublasHandle_t handle = nullptr;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  auto device_copy = [](const std::vector<float>& h) {
    float* d = nullptr;
    REQUIRE(cudaMalloc(&d, h.size() * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice) ==
            cudaSuccess);
    return d;
  };
  for (cublasOperation_t ta : {CUBLAS_OP_N, CUBLAS_OP_T}) {
    for (cublasOperation_t tb : {CUBLAS_OP_N, CUBLAS_OP_T}) {
      for (bool zero_beta : {false, true}) {
        DYNAMIC_SECTION("op(A) " << (ta == CUBLAS_OP_N ? "N" : "T") << " op(B) "
                                 << (tb == CUBLAS_OP_N ? "N" : "T")
                                 << (zero_beta ? " beta 0" : "")) {
          const int m = uniform_int(1, 40), n = uniform_int(1, 40), k = uniform_int(1, 40);
          // Stored shapes (column-major): A is m x k, or k x m when transposed; padding rows
          // beyond each leading dimension's minimum catch ld mix-ups.
          const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
          const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
          const int lda = a_rows + uniform_int(0, 3), ldb = b_rows + uniform_int(0, 3),
                    ldc = m + uniform_int(0, 3);
          const std::vector<float> a = test::random_vector(std::size_t(lda) * a_cols);
          const std::vector<float> b = test::random_vector(std::size_t(ldb) * b_cols);
          std::vector<float> c = test::random_vector(std::size_t(ldc) * n);
          const float alpha = std::uniform_real_distribution<float>(0.5f, 2.f)(test::rng());
          const float beta =
              zero_beta ? 0.f : std::uniform_real_distribution<float>(-2.f, -0.5f)(test::rng());
          if (zero_beta)
            for (int j = 0; j < n; ++j)
              for (int i = 0; i < m; ++i) c[std::size_t(j) * ldc + i] = NAN;  // must be ignored

          std::vector<double> ref(c.begin(), c.end());
          for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
              double acc = 0;
              for (int p = 0; p < k; ++p) {
                const double av =
                    ta == CUBLAS_OP_N ? a[std::size_t(p) * lda + i] : a[std::size_t(i) * lda + p];
                const double bv =
                    tb == CUBLAS_OP_N ? b[std::size_t(j) * ldb + p] : b[std::size_t(p) * ldb + j];
                acc += av * bv;
              }
              const double old = zero_beta ? 0.0 : c[std::size_t(j) * ldc + i];
              ref[std::size_t(j) * ldc + i] = alpha * acc + beta * old;
            }

          float* da = device_copy(a);
          float* db = device_copy(b);
          float* dc = device_copy(c);
          REQUIRE(cublasSgemm(handle, ta, tb, m, n, k, &alpha, da, lda, db, ldb, &beta, dc, ldc) ==
                  CUBLAS_STATUS_SUCCESS);
          std::vector<float> out(c.size());
          REQUIRE(cudaMemcpy(out.data(), dc, out.size() * sizeof(float), cudaMemcpyDeviceToHost) ==
                  cudaSuccess);
          // The reference keeps C's padding rows (i >= m), so they must come back untouched.
          INFO("m " << m << " n " << n << " k " << k << " lda " << lda << " ldb " << ldb << " ldc "
                    << ldc);
          CHECK(test::all_close(out, ref, 1e-4, 1e-4, zero_beta ? "C (beta 0, old C NaN)" : "C"));
          CHECK(cudaFree(da) == cudaSuccess);
          CHECK(cudaFree(db) == cudaSuccess);
          CHECK(cudaFree(dc) == cudaSuccess);
        }
      }
    }
  }
  SECTION("invalid arguments, as cuBLAS checks them") {
    float* d = nullptr;
    REQUIRE(cudaMalloc(&d, 64 * sizeof(float)) == cudaSuccess);
    const float one = 1.f, zero = 0.f;
    CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, d, 3, d, 4, &zero, d, 4) ==
          CUBLAS_STATUS_INVALID_VALUE);  // lda < m
    CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, 4, 4, 5, &one, d, 4, d, 5, &zero, d, 4) ==
          CUBLAS_STATUS_INVALID_VALUE);  // lda < k for op(A) = A^T
    CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, -1, 4, 4, &one, d, 4, d, 4, &zero, d, 4) ==
          CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, d, 4, d, 4, &zero, d, 4) ==
          CUBLAS_STATUS_NOT_INITIALIZED);
    std::vector<float> host(16, 1.f);
    CHECK_THROWS_AS(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, host.data(), 4, d,
                                4, &zero, d, 4),
                    EmuError);  // a host pointer would fault on a GPU
    CHECK(cudaFree(d) == cudaSuccess);
  }
  CHECK(cublasDestroy(handle) == CUBLAS_STATUS_SUCCESS);
}

// ---- CUDA graphs -------------------------------------------------------------------------------

TEST_CASE("a captured sequence of copies, memsets and launches replays bit-identical to running it",
          "[emulator][graph]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      const int n = uniform_int(1, 40000), blocks = uniform_int(1, 40);
      const std::vector<float> x = test::random_vector(std::size_t(n));
      const std::vector<float> y = test::random_vector(std::size_t(n));
      const float a = std::uniform_real_distribution<float>(-2.f, 2.f)(test::rng());
      INFO("n " << n << ", blocks " << blocks << ", a " << a);
      const std::vector<float> direct = api.stream_sequence(x, y, a, blocks, false);
      const std::vector<float> replayed = api.stream_sequence(x, y, a, blocks, true);
      REQUIRE(direct.size() == std::size_t(n + blocks));
      REQUIRE(replayed.size() == direct.size());
      // Same bits (memcmp: NaN-proof), and right: the memset's zeros at i % 3 == 0 included.
      CHECK(std::memcmp(direct.data(), replayed.data(), direct.size() * sizeof(float)) == 0);
      std::vector<double> z(static_cast<std::size_t>(n)),
          sums(static_cast<std::size_t>(blocks), 0.0);
      for (int i = 0; i < n; ++i) {
        z[std::size_t(i)] = i % 3 ? double(a) * x[std::size_t(i)] + y[std::size_t(i)] : 0.0;
        sums[std::size_t(i / 256 % blocks)] += z[std::size_t(i)];
      }
      const std::vector<float> out_z(replayed.begin(), replayed.begin() + n);
      const std::vector<float> out_sums(replayed.begin() + n, replayed.end());
      CHECK(test::all_close(out_z, z, 1e-6, 1e-6, "z"));
      CHECK(test::all_close(out_sums, sums, 1e-3, 1e-4, "block sums"));
    }
  }
}

TEST_CASE(
    "a graph runs at each launch, with the argument values of capture time and the data of "
    "launch time",
    "[emulator][graph]") {
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      const int n = uniform_int(1, 3000), scale = uniform_int(2, 9);
      std::vector<int> v_capture(static_cast<std::size_t>(n)), v_replay(v_capture.size());
      for (int& v : v_capture) v = uniform_int(-1000, 1000);
      for (int& v : v_replay) v = uniform_int(-1000, 1000);
      for (int replays : {0, 1, uniform_int(2, 5)}) {
        INFO("n " << n << ", scale " << scale << ", replays " << replays);
        std::vector<int> expected(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i)
          expected[std::size_t(i)] = replays * scale * v_replay[std::size_t(i)];
        // 0 replays: the capture itself ran nothing. More: each launch ran once more, with the
        // scale of capture time (not the host variable's later value) and v as copied after it.
        CHECK(api.graph_accumulate(v_capture, v_replay, scale, replays) == expected);
      }
    }
  }
}

TEST_CASE("what CUDA forbids during a capture fails with CUDA's code and invalidates the capture",
          "[emulator][graph]") {
  using emu::examples::CaptureRule;
  constexpr int kGlobal = 0, kThreadLocal = 1, kRelaxed = 2;
  constexpr int kActive = 1, kInvalidated = 2;
  // {first launch, the call, status after it, a memset on the stream, cudaStreamEndCapture, graph}
  const std::vector<int> fine = {0, 0, kActive, 0, 0, 1};
  auto broken = [](int code) { return std::vector<int>{0, code, kInvalidated, 901, 901, 0}; };
  struct Case {
    const char* what;
    int rule, mode;
    bool blocking;
    std::vector<int> expected;
  };
  const std::vector<Case> cases = {
      {"nothing forbidden", emu::examples::kRuleNone, kGlobal, false, fine},
      {"cudaStreamSynchronize on the capturing stream", emu::examples::kRuleSyncStream, kGlobal,
       false, broken(900)},
      {"cudaStreamQuery on it, even relaxed", emu::examples::kRuleQueryStream, kRelaxed, false,
       broken(900)},
      {"cudaDeviceSynchronize, even relaxed", emu::examples::kRuleDeviceSync, kRelaxed, false,
       broken(900)},
      {"cudaMalloc, global mode", emu::examples::kRuleMalloc, kGlobal, false, broken(900)},
      {"cudaMalloc, thread-local mode", emu::examples::kRuleMalloc, kThreadLocal, false,
       broken(900)},
      {"cudaMalloc, relaxed mode", emu::examples::kRuleMalloc, kRelaxed, false, fine},
      {"legacy-stream launch while a blocking stream captures", emu::examples::kRuleLegacyLaunch,
       kGlobal, true, broken(906)},
      {"legacy-stream launch while a non-blocking stream captures",
       emu::examples::kRuleLegacyLaunch, kGlobal, false, fine},
      {"synchronous cudaMemcpy while a blocking stream captures", emu::examples::kRuleSyncMemcpy,
       kThreadLocal, true, broken(906)},
      {"synchronous cudaMemcpy while a non-blocking stream captures",
       emu::examples::kRuleSyncMemcpy, kThreadLocal, false, fine},
      {"cudaEventQuery of an event recorded in the capture", emu::examples::kRuleEventQuery,
       kGlobal, false, broken(907)},
  };
  for (const Api& api : apis()) {
    DYNAMIC_SECTION(api.name) {
      for (const Case& c : cases) {
        INFO(c.what << " (mode " << c.mode << (c.blocking ? ", blocking stream)" : ")"));
        CHECK(api.capture_rule(c.rule, c.mode, c.blocking) == c.expected);
      }
    }
  }
}

TEST_CASE("capture modes across threads, capture misuse, and graph handles on the emulator",
          "[emulator][graph]") {
  using namespace evo::emu;
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cudaGraph_t graph = nullptr;
  // Another thread's call, while this thread captures.
  auto from_other_thread = [](auto call) {
    cudaError_t e = cudaSuccess;
    std::thread([&] { e = call(); }).join();
    return e;
  };
  auto other_thread_malloc = [&] {
    return from_other_thread([] {
      void* p = nullptr;
      const cudaError_t e = cudaMalloc(&p, 64);
      if (p) (void)cudaFree(p);
      return e;
    });
  };

  SECTION("a global capture forbids other threads' cudaMalloc, a thread-local one does not") {
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(other_thread_malloc() == cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamIsCapturing(s, &status) == cudaSuccess);
    CHECK(status == cudaStreamCaptureStatusInvalidated);
    CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK_THAT(cudaGetErrorString(cudaErrorStreamCaptureInvalidated), Contains("cudaMalloc"));
    CHECK(graph == nullptr);

    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    CHECK(other_thread_malloc() == cudaSuccess);
    REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
    // A thread in relaxed interaction mode may allocate during this thread's global capture.
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(from_other_thread([] {
            cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
            if (cudaThreadExchangeStreamCaptureMode(&mode) != cudaSuccess) return cudaErrorUnknown;
            void* p = nullptr;
            const cudaError_t e = cudaMalloc(&p, 64);
            if (p) (void)cudaFree(p);
            return e;
          }) == cudaSuccess);
    REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  }
  SECTION("only the thread that began a non-relaxed capture may end it") {
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    CHECK(from_other_thread([&] { return cudaStreamEndCapture(s, &graph); }) ==
          cudaErrorStreamCaptureWrongThread);
    REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);  // still capturing until now
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
    CHECK(from_other_thread([&] { return cudaStreamEndCapture(s, &graph); }) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  }
  SECTION("misuse: the legacy stream, twice, not capturing, destroying, events") {
    CHECK(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal) ==
          cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamBeginCapture(s, static_cast<cudaStreamCaptureMode>(7)) ==
          cudaErrorInvalidValue);
    CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorIllegalState);
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaErrorIllegalState);
    CHECK(cudaStreamDestroy(s) == cudaErrorStreamCaptureUnsupported);  // still alive
    CHECK(cudaStreamIsCapturing(s, &status) == cudaSuccess);
    CHECK(status == cudaStreamCaptureStatusActive);
    // A non-blocking capture leaves the legacy stream alone.
    CHECK(cudaStreamIsCapturing(nullptr, &status) == cudaSuccess);
    CHECK(status == cudaStreamCaptureStatusNone);
    cudaEvent_t outside = nullptr;
    REQUIRE(cudaEventCreate(&outside) == cudaSuccess);
    REQUIRE(cudaEventRecord(outside, nullptr) == cudaSuccess);
    CHECK(cudaStreamWaitEvent(s, outside, cudaEventWaitExternal) == cudaSuccess);
    CHECK(cudaStreamWaitEvent(s, outside, 0) == cudaErrorStreamCaptureIsolation);
    CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(cudaEventDestroy(outside) == cudaSuccess);

    // Fork into a second stream through an event: not emulated, and said so.
    cudaStream_t s2 = nullptr;
    cudaEvent_t inside = nullptr;
    REQUIRE(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(cudaEventCreate(&inside) == cudaSuccess);
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    REQUIRE(cudaEventRecord(inside, s) == cudaSuccess);
    CHECK(cudaStreamWaitEvent(s, inside, 0) == cudaSuccess);  // its own stream: no-op
    CHECK(cudaStreamWaitEvent(s2, inside, 0) == cudaErrorNotSupported);
    CHECK_THAT(cudaGetErrorString(cudaErrorNotSupported), Contains("one stream"));
    CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(cudaEventDestroy(inside) == cudaSuccess);
    CHECK(cudaStreamDestroy(s2) == cudaSuccess);
  }
  SECTION("graph handles: instantiate flags, launch after the graph is gone, double destroy") {
    float* d = nullptr;
    REQUIRE(cudaMalloc(&d, 256 * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMemset(d, 0, 256 * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    REQUIRE(cudaMemsetAsync(d, 0x3f, 16 * sizeof(float), s) == cudaSuccess);  // 0x3f3f3f3f
    REQUIRE(cudaMemcpyAsync(d + 128, d, 16 * sizeof(float), cudaMemcpyDeviceToDevice, s) ==
            cudaSuccess);
    REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
    std::vector<float> h(256, -1.f);
    REQUIRE(cudaMemcpy(h.data(), d, 256 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(h[0] == 0.f);  // recorded, not run
    cudaGraphExec_t exec = nullptr;
    CHECK(cudaGraphInstantiate(&exec, graph, cudaGraphInstantiateFlagUpload) ==
          cudaErrorInvalidValue);
    CHECK(cudaGraphInstantiate(&exec, graph, cudaGraphInstantiateFlagDeviceLaunch) ==
          cudaErrorNotSupported);
    REQUIRE(cudaGraphInstantiate(&exec, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch) ==
            cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);  // the executable graph lives on
    CHECK(cudaGraphDestroy(graph) == cudaErrorInvalidValue);
    CHECK(cudaGraphLaunch(exec, s) == cudaSuccess);
    REQUIRE(cudaMemcpy(h.data(), d, 256 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    std::uint32_t bits = 0;
    std::memcpy(&bits, &h[128], sizeof bits);
    CHECK(bits == 0x3f3f3f3fu);
    CHECK(h[16] == 0.f);
    // Memory freed after the capture is caught at the replay, as a GPU would fault on it.
    REQUIRE(cudaFree(d) == cudaSuccess);
    CHECK(cudaGraphLaunch(exec, s) == cudaErrorInvalidValue);
    CHECK_THAT(cudaGetErrorString(cudaErrorInvalidValue), Contains("replayed by cudaGraphLaunch"));
    CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
    CHECK(cudaGraphExecDestroy(exec) == cudaErrorInvalidValue);
  }
  (void)cudaGetLastError();
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
}

TEST_CASE("cuBLAS SGEMM on a capturing stream is recorded and replayed like a kernel",
          "[emulator][graph]") {
  using namespace evo::emu;
  const int m = uniform_int(1, 40), n = uniform_int(1, 40), k = uniform_int(1, 40);
  INFO("m " << m << " n " << n << " k " << k);
  const std::vector<float> a = test::random_vector(std::size_t(m) * k);
  const std::vector<float> b = test::random_vector(std::size_t(k) * n);
  const std::vector<float> c0 = test::random_vector(std::size_t(m) * n);
  float *da = nullptr, *db = nullptr, *dc = nullptr, *dalpha = nullptr;
  REQUIRE(cudaMalloc(&da, a.size() * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMalloc(&db, b.size() * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMalloc(&dc, c0.size() * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMalloc(&dalpha, sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  cublasHandle_t handle = nullptr;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasSetStream(handle, s) == CUBLAS_STATUS_SUCCESS);
  auto read_c = [&] {
    std::vector<float> c(c0.size());
    REQUIRE(cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
    return c;
  };
  auto reset_c = [&] {
    REQUIRE(cudaMemcpy(dc, c0.data(), c0.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
  };
  const float beta = 0.5f;
  float alpha = std::uniform_real_distribution<float>(0.5f, 2.f)(test::rng());
  const float captured_alpha = alpha;

  reset_c();
  REQUIRE(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, da, m, db, k, &beta, dc,
                      m) == CUBLAS_STATUS_SUCCESS);
  const std::vector<float> direct = read_c();

  reset_c();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  REQUIRE(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, da, m, db, k, &beta, dc,
                      m) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  CHECK(read_c() == c0);  // recorded, not run
  alpha = 1000.f;         // host pointer mode: the graph keeps the value of capture time
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  const std::vector<float> replayed = read_c();
  CHECK(std::memcmp(direct.data(), replayed.data(), direct.size() * 4) == 0);
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
  CHECK(cudaGraphDestroy(graph) == cudaSuccess);

  // Device pointer mode: alpha is read when the graph runs.
  REQUIRE(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_DEVICE) == CUBLAS_STATUS_SUCCESS);
  float* dbeta = nullptr;
  REQUIRE(cudaMalloc(&dbeta, sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMemcpy(dbeta, &beta, 4, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(dalpha, &alpha, 4, cudaMemcpyHostToDevice) == cudaSuccess);  // 1000
  reset_c();
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  REQUIRE(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, dalpha, da, m, db, k, dbeta, dc,
                      m) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  REQUIRE(cudaMemcpy(dalpha, &captured_alpha, 4, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  const std::vector<float> device_mode = read_c();
  CHECK(std::memcmp(direct.data(), device_mode.data(), direct.size() * 4) == 0);
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
  CHECK(cudaGraphDestroy(graph) == cudaSuccess);

  CHECK(cublasDestroy(handle) == CUBLAS_STATUS_SUCCESS);
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  for (float* p : {da, db, dc, dalpha, dbeta}) CHECK(cudaFree(p) == cudaSuccess);
}

// ---- errors on demand
// ----------------------------------------------------------------------------

TEST_CASE("which CUDA errors are sticky", "[emulator][faults]") {
  for (int code : {700, 702, 710, 714, 715, 716, 717, 718, 719}) CHECK(is_sticky_cuda_error(code));
  for (int code : {0, 1, 2, 9, 400, 701, 900, 901, 999, CudaError::kNoCode})
    CHECK_FALSE(is_sticky_cuda_error(code));
  CHECK(CudaError("c", "r", "f", 1, 719).sticky());
  CHECK_FALSE(CudaError("c", "r", "f", 1, 2).sticky());
  CHECK(CudaError("c", "r", "f", 1).code() == CudaError::kNoCode);
}

TEST_CASE("an injected sticky error fails its launch and every later call, until reset",
          "[emulator][faults]") {
  using namespace evo::emu;
  const ResetErrorsAtExit reset;
  const std::vector<float> x = test::random_vector(5000);
  std::vector<double> ref(7, 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) ref[i / 128 % 7] += x[i];
  const int after = uniform_int(0, 3);
  const cudaError_t code = uniform_int(0, 1) ? cudaErrorIllegalAddress : cudaErrorLaunchFailure;
  INFO("code " << int(code) << ", after " << after << " launches");
  inject_error(code, after);
  for (int i = 0; i < after; ++i)  // one launch each
    CHECK(test::all_close(examples::reduce_sum(x, 7, 128), ref, 1e-3, 1e-4));
  try {
    (void)examples::reduce_sum(x, 7, 128);
    FAIL("the injected error did not come");
  } catch (const CudaError& e) {
    CHECK(e.code() == int(code));
    CHECK(e.sticky());
    CHECK_THAT(e.what(), Contains("launch of reduce_sum_kernel") && Contains("injected"));
  }
  // The context is poisoned: every later call says so, and the error is never cleared.
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 64) == code);
  CHECK(p == nullptr);
  CHECK(cudaDeviceSynchronize() == code);
  CHECK(cudaGetLastError() == code);
  CHECK(cudaGetLastError() == code);
  cudaStream_t s = nullptr;
  CHECK(cudaStreamCreate(&s) == code);
  CHECK(cudaStreamSynchronize(nullptr) == code);
  CHECK(cudaDeviceReset() == code);  // only a new process recovers a GPU
  cublasHandle_t handle = nullptr;
  CHECK(cublasCreate(&handle) == CUBLAS_STATUS_NOT_INITIALIZED);
  CHECK_THAT(cudaGetErrorString(code), Contains("injected"));
  try {
    (void)examples::reduce_sum(x, 7, 128);  // its first cudaMalloc fails
    FAIL("a poisoned device ran a kernel");
  } catch (const CudaError& e) {
    CHECK(e.code() == int(code));
    CHECK(e.sticky());
  }
  // What needs no context still answers.
  int count = 0;
  CHECK(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK(cudaSetDevice(0) == cudaSuccess);

  reset_errors();
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(test::all_close(examples::reduce_sum(x, 7, 128), ref, 1e-3, 1e-4));
}

TEST_CASE("an injected error inside a graph's replay fails that launch and poisons the device",
          "[emulator][faults][graph]") {
  using namespace evo::emu;
  const ResetErrorsAtExit reset;
  const std::vector<int> v(100, 3);
  // The capture is not an execution; the first replay runs, the second faults.
  inject_errors("launch-failure:1");
  try {
    (void)examples::graph_accumulate(v, v, 2, 3);
    FAIL("the injected error did not come");
  } catch (const CudaError& e) {
    CHECK(e.code() == int(cudaErrorLaunchFailure));
    CHECK(e.sticky());
    CHECK_THAT(e.call(), Contains("cudaGraphLaunch"));
  }
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
}

TEST_CASE("injected out of memory fails one cudaMalloc and is not sticky", "[emulator][faults]") {
  using namespace evo::emu;
  const ResetErrorsAtExit reset;
  const int after = uniform_int(0, 4);
  INFO("after " << after << " allocations");
  inject_error(cudaErrorMemoryAllocation, after);
  std::vector<void*> ok;
  for (int i = 0; i < after; ++i) {
    void* p = nullptr;
    CHECK(cudaMalloc(&p, 64) == cudaSuccess);
    ok.push_back(p);
  }
  void* failed = reinterpret_cast<void*>(1);
  CHECK(cudaMalloc(&failed, 64) == cudaErrorMemoryAllocation);
  CHECK(failed == nullptr);
  CHECK_THAT(cudaGetErrorString(cudaErrorMemoryAllocation), Contains("injected out of memory"));
  CHECK(cudaGetLastError() == cudaErrorMemoryAllocation);
  CHECK(cudaGetLastError() == cudaSuccess);  // not sticky: read once, gone
  void* later = nullptr;
  CHECK(cudaMalloc(&later, 64) == cudaSuccess);
  ok.push_back(later);
  for (void* p : ok) CHECK(cudaFree(p) == cudaSuccess);

  // Through the CUDA_CHECK path, as a worker sees it: a CudaError that is not sticky.
  inject_errors("oom:0");
  try {
    (void)examples::reduce_sum(test::random_vector(100), 1, 64);
    FAIL("the injected error did not come");
  } catch (const CudaError& e) {
    CHECK(e.code() == int(cudaErrorMemoryAllocation));
    CHECK_FALSE(e.sticky());
  }
  (void)cudaGetLastError();
  CHECK(examples::reduce_sum(std::vector<float>(64, 1.f), 1, 64) == std::vector<float>{64.f});
}

TEST_CASE("injection specs: what EVO_EMU_INJECT accepts", "[emulator][faults]") {
  const ResetErrorsAtExit reset;
  CHECK_NOTHROW(emu::inject_errors("oom:0,illegal-address:12,out-of-resources:3"));
  for (const char* bad :
       {"", "oom", "oom:", "oom:-1", "oom:1x", "segfault:3", "oom:1,", "Illegal-Address:1"})
    CHECK_THROWS_WITH(emu::inject_errors(bad), Contains("is not an injection the emulator knows") &&
                                                   Contains("illegal-address"));
  CHECK_THROWS_AS(emu::inject_error(emu::cudaSuccess, 0), emu::EmuError);
  CHECK_THROWS_AS(emu::inject_error(emu::cudaErrorIllegalAddress, -1), emu::EmuError);
}

// ---- the emulated NCCL ----------------------------------------------------------------------

namespace {

// Pretends there are `n` emulated devices for one test, then restores the count before.
class ScopedDeviceCount {
 public:
  explicit ScopedDeviceCount(int n) {
    if (emu::cudaGetDeviceCount(&saved_) != emu::cudaSuccess) saved_ = 0;
    emu::set_device_count(n);
  }
  ~ScopedDeviceCount() {
    emu::set_device_count(saved_);
    (void)emu::cudaSetDevice(0);
  }
  ScopedDeviceCount(const ScopedDeviceCount&) = delete;
  ScopedDeviceCount& operator=(const ScopedDeviceCount&) = delete;

 private:
  int saved_ = 1;
};

// Sets an environment variable for one test (the emulated NCCL reads EVO_EMU_NCCL_TIMEOUT at
// every wait), then unsets it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

// `n` communicators over devices 0..n-1, destroyed at the end of the scope (an aborted one is
// already gone: release() it first).
struct Comms {
  std::vector<emu::ncclComm_t> c;
  explicit Comms(int n) : c(std::size_t(n), nullptr) {
    REQUIRE(emu::ncclCommInitAll(c.data(), n, nullptr) == emu::ncclSuccess);
  }
  ~Comms() {
    for (emu::ncclComm_t comm : c) (void)emu::ncclCommDestroy(comm);
  }
  emu::ncclComm_t operator[](int r) const { return c[std::size_t(r)]; }
  void release(int r) { c[std::size_t(r)] = nullptr; }
  Comms(const Comms&) = delete;
  Comms& operator=(const Comms&) = delete;
};

template <typename T>
T* device_copy(const std::vector<T>& h) {
  void* d = nullptr;
  REQUIRE(emu::cudaMalloc(&d, std::max<std::size_t>(1, h.size()) * sizeof(T)) == emu::cudaSuccess);
  REQUIRE(emu::cudaMemcpy(d, h.data(), h.size() * sizeof(T), emu::cudaMemcpyHostToDevice) ==
          emu::cudaSuccess);
  return static_cast<T*>(d);
}

template <typename T>
std::vector<T> host_copy(const T* d, std::size_t n) {
  std::vector<T> h(n);
  REQUIRE(emu::cudaMemcpy(h.data(), d, n * sizeof(T), emu::cudaMemcpyDeviceToHost) ==
          emu::cudaSuccess);
  return h;
}

template <typename T>
emu::ncclDataType_t nccl_type();
template <>
emu::ncclDataType_t nccl_type<float>() {
  return emu::ncclFloat32;
}
template <>
emu::ncclDataType_t nccl_type<std::int32_t>() {
  return emu::ncclInt32;
}

// Random values of T: floats in [-1, 1], integers small enough that no sum overflows.
template <typename T>
std::vector<T> random_values(std::size_t n) {
  if constexpr (std::is_floating_point_v<T>) {
    return test::random_vector(n);
  } else {
    std::vector<T> v(n);
    for (T& x : v) x = T(uniform_int(-100000, 100000));
    return v;
  }
}

// The result every rank must get: rank 0's value, then rank 1's, ... combined in T, as the
// emulated NCCL documents (so a float sum is bit-identical, not merely close).
template <typename T>
std::vector<T> rank_order_reduce(const std::vector<std::vector<T>>& in, emu::ncclRedOp_t op) {
  std::vector<T> out = in[0];
  for (std::size_t r = 1; r < in.size(); ++r)
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = op == emu::ncclMax ? std::max(out[i], in[r][i]) : T(out[i] + in[r][i]);
  if (op == emu::ncclAvg)
    for (T& v : out) v = T(v / T(in.size()));
  return out;
}

// One all-reduce over `nranks` ranks, each from its own thread as evo's trainer calls it; every
// other rank in place. Checks every rank's result against the rank-order loop, bit for bit.
template <typename T>
void check_all_reduce_threads(int nranks, emu::ncclRedOp_t op) {
  using namespace evo::emu;
  const std::size_t count = std::size_t(uniform_int(1, 5000));
  const int in_place_parity = uniform_int(0, 1);
  INFO(nranks << " ranks, op " << int(op) << ", count " << count << ", in place on ranks of parity "
              << in_place_parity);
  std::vector<std::vector<T>> in;
  for (int r = 0; r < nranks; ++r) in.push_back(random_values<T>(count));
  const std::vector<T> ref = rank_order_reduce(in, op);

  Comms comms(nranks);
  std::vector<std::vector<T>> out{std::size_t(nranks)};
  std::vector<ncclResult_t> codes(std::size_t(nranks), ncclInternalError);
  std::vector<std::thread> ranks;
  for (int r = 0; r < nranks; ++r)
    ranks.emplace_back([&, r] {
      const std::size_t i = std::size_t(r);
      if (cudaSetDevice(r) != cudaSuccess) return;
      // Catch's macros are not thread-safe: workers only record, the test thread checks.
      T* send = device_copy(in[i]);
      T* recv = r % 2 == in_place_parity ? send : device_copy(random_values<T>(count));
      codes[i] = ncclAllReduce(send, recv, count, nccl_type<T>(), op, comms[r], nullptr);
      out[i] = host_copy(recv, count);
      if (recv != send) (void)cudaFree(recv);
      (void)cudaFree(send);
    });
  for (std::thread& t : ranks) t.join();
  for (int r = 0; r < nranks; ++r) {
    INFO("rank " << r);
    CHECK(codes[std::size_t(r)] == ncclSuccess);
    CHECK(out[std::size_t(r)].size() == count);
    CHECK(std::memcmp(out[std::size_t(r)].data(), ref.data(), count * sizeof(T)) == 0);
  }
}

}  // namespace

TEST_CASE("NCCL all-reduce from one thread per rank: sum, avg, max in rank order, bit for bit",
          "[emulator][nccl]") {
  const ScopedDeviceCount devices(4);
  for (int nranks : {2, 3, 4})
    for (emu::ncclRedOp_t op : {emu::ncclSum, emu::ncclAvg, emu::ncclMax}) {
      check_all_reduce_threads<float>(nranks, op);
      check_all_reduce_threads<std::int32_t>(nranks, op);
    }
}

TEST_CASE("NCCL group: one thread runs every rank, several collectives in a row",
          "[emulator][nccl]") {
  using namespace evo::emu;
  const ScopedDeviceCount devices(4);
  const int nranks = uniform_int(2, 4);
  const int root = uniform_int(1, nranks - 1);  // not rank 0: the root must come from the call
  const std::size_t n = std::size_t(uniform_int(1, 3000));
  INFO(nranks << " ranks, count " << n << ", broadcast root " << root);
  Comms comms(nranks);
  std::vector<std::vector<float>> a_in, b_in;
  std::vector<float*> a, a_out, b;
  for (int r = 0; r < nranks; ++r) {
    a_in.push_back(test::random_vector(n));
    b_in.push_back(test::random_vector(n));
    a.push_back(device_copy(a_in.back()));
    a_out.push_back(device_copy(std::vector<float>(n, 0.f)));
    b.push_back(device_copy(b_in.back()));
  }
  // Per rank, in stream order: a_out = sum of a (out of place), b = root's b (in place), then
  // a_out = max of a_out (in place), which must read the sum the first collective wrote.
  REQUIRE(ncclGroupStart() == ncclSuccess);
  REQUIRE(ncclGroupStart() == ncclSuccess);  // nested: only the outermost end runs the calls
  for (int r = 0; r < nranks; ++r) {
    const std::size_t i = std::size_t(r);
    REQUIRE(ncclAllReduce(a[i], a_out[i], n, ncclFloat32, ncclSum, comms[r], nullptr) ==
            ncclSuccess);
    REQUIRE(ncclBroadcast(b[i], b[i], n, ncclFloat32, root, comms[r], nullptr) == ncclSuccess);
  }
  REQUIRE(ncclGroupEnd() == ncclSuccess);
  for (int r = 0; r < nranks; ++r)  // nothing ran yet: still the inputs
    CHECK(host_copy(b[std::size_t(r)], n) == b_in[std::size_t(r)]);
  for (int r = 0; r < nranks; ++r) {
    const std::size_t i = std::size_t(r);
    REQUIRE(ncclAllReduce(a_out[i], a_out[i], n, ncclFloat32, ncclMax, comms[r], nullptr) ==
            ncclSuccess);
  }
  REQUIRE(ncclGroupEnd() == ncclSuccess);

  const std::vector<float> sum = rank_order_reduce(a_in, ncclSum);
  for (int r = 0; r < nranks; ++r) {
    INFO("rank " << r);
    const std::size_t i = std::size_t(r);
    CHECK(host_copy(a_out[i], n) == sum);  // the max of equal sums is the sum
    CHECK(host_copy(b[i], n) == b_in[std::size_t(root)]);
    CHECK(host_copy(a[i], n) == a_in[i]);  // out of place: the input is untouched
    CHECK(cudaFree(a[i]) == cudaSuccess);
    CHECK(cudaFree(a_out[i]) == cudaSuccess);
    CHECK(cudaFree(b[i]) == cudaSuccess);
  }
  CHECK(ncclGroupEnd() == ncclInvalidUsage);  // no group open
  CHECK_THAT(ncclGetLastError(nullptr), Contains("without a matching ncclGroupStart"));
}

TEST_CASE("NCCL: a zero-count collective is a rendezvous that touches nothing",
          "[emulator][nccl]") {
  using namespace evo::emu;
  const ScopedDeviceCount devices(2);
  Comms comms(2);
  REQUIRE(ncclGroupStart() == ncclSuccess);
  for (int r = 0; r < 2; ++r)
    CHECK(ncclAllReduce(nullptr, nullptr, 0, ncclFloat32, ncclSum, comms[r], nullptr) ==
          ncclSuccess);
  CHECK(ncclGroupEnd() == ncclSuccess);
}

TEST_CASE("NCCL: ranks that disagree get ncclInvalidArgument on every rank, naming both values",
          "[emulator][nccl]") {
  using namespace evo::emu;
  const ScopedDeviceCount devices(3);
  const std::size_t n = std::size_t(uniform_int(10, 1000));
  Comms comms(3);
  std::vector<ncclResult_t> codes(3, ncclSuccess);
  std::vector<std::string> why(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.emplace_back([&, r] {
      (void)cudaSetDevice(r);
      float* buf = device_copy(test::random_vector(n));
      const std::size_t count = r == 2 ? n - 1 : n;  // rank 2 is off by one
      codes[std::size_t(r)] =
          ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, comms[r], nullptr);
      why[std::size_t(r)] = ncclGetLastError(comms[r]);
      (void)cudaFree(buf);
    });
  for (std::thread& t : ranks) t.join();
  for (int r = 0; r < 3; ++r) {
    INFO("rank " << r << ": " << why[std::size_t(r)]);
    CHECK(codes[std::size_t(r)] == ncclInvalidArgument);
    CHECK_THAT(why[std::size_t(r)],
               Contains("count " + std::to_string(n) + " vs " + std::to_string(n - 1)) &&
                   Contains("rank 2"));
  }
  // The clique goes on: the next collective is the next one on every rank.
  REQUIRE(ncclGroupStart() == ncclSuccess);
  std::vector<float*> bufs;
  for (int r = 0; r < 3; ++r) {
    bufs.push_back(device_copy(std::vector<float>(4, float(r))));
    CHECK(ncclAllReduce(bufs.back(), bufs.back(), 4, ncclFloat32, ncclSum, comms[r], nullptr) ==
          ncclSuccess);
  }
  CHECK(ncclGroupEnd() == ncclSuccess);
  for (float* b : bufs) {
    CHECK(host_copy(b, 4) == std::vector<float>(4, 3.f));
    CHECK(cudaFree(b) == cudaSuccess);
  }
}

TEST_CASE(
    "NCCL: a rank that never joins is ncclInvalidUsage after EVO_EMU_NCCL_TIMEOUT, not a hang",
    "[emulator][nccl]") {
  using namespace evo::emu;
  const ScopedDeviceCount devices(3);
  const ScopedEnv timeout("EVO_EMU_NCCL_TIMEOUT", "1");
  Comms comms(3);
  std::vector<float*> bufs;
  for (int r = 0; r < 3; ++r) bufs.push_back(device_copy(test::random_vector(64)));
  std::vector<ncclResult_t> codes(2, ncclSuccess);
  std::vector<std::string> why(2);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)  // rank 2 skips the collective
    ranks.emplace_back([&, r] {
      (void)cudaSetDevice(r);
      const std::size_t i = std::size_t(r);
      codes[i] = ncclAllReduce(bufs[i], bufs[i], 64, ncclFloat32, ncclSum, comms[r], nullptr);
      why[i] = ncclGetLastError(nullptr);
    });
  for (std::thread& t : ranks) t.join();
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(waited >= 0.9);
  CHECK(waited < 30);
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r << ": " << why[std::size_t(r)]);
    CHECK(codes[std::size_t(r)] == ncclInvalidUsage);
    CHECK_THAT(why[std::size_t(r)], Contains("collective 0") && Contains("ncclAllReduce") &&
                                        Contains("rank 2 never joined") &&
                                        Contains("hangs a real GPU"));
  }
  // Coming late does not run it: the others have given up on their buffers.
  CHECK(ncclAllReduce(bufs[2], bufs[2], 64, ncclFloat32, ncclSum, comms[2], nullptr) ==
        ncclInvalidUsage);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("rank 2 joined too late"));
  for (float* b : bufs) CHECK(cudaFree(b) == cudaSuccess);

  // The usual mistake: one thread calling every rank without a group waits for the next rank.
  float* d = device_copy(test::random_vector(8));
  CHECK(ncclBroadcast(d, d, 8, ncclFloat32, 0, comms[0], nullptr) == ncclInvalidUsage);
  CHECK_THAT(ncclGetLastError(nullptr),
             Contains("ranks 1, 2 never joined") && Contains("ncclGroupStart"));
  CHECK(cudaFree(d) == cudaSuccess);
}

TEST_CASE("NCCL: ncclCommAbort wakes the waiting ranks with ncclRemoteError", "[emulator][nccl]") {
  using namespace evo::emu;
  const ScopedDeviceCount devices(2);
  const ScopedEnv timeout("EVO_EMU_NCCL_TIMEOUT", "30");  // a hang fails the test, eventually
  Comms comms(2);
  float* d = device_copy(test::random_vector(16));
  ncclResult_t code = ncclSuccess;
  std::string why;
  std::thread waiter([&] {
    code = ncclAllReduce(d, d, 16, ncclFloat32, ncclSum, comms[0], nullptr);
    why = ncclGetLastError(nullptr);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // usually waiting by now
  CHECK(ncclCommAbort(comms[1]) == ncclSuccess);
  comms.release(1);
  waiter.join();
  INFO(why);
  CHECK(code == ncclRemoteError);
  CHECK_THAT(why, Contains("ncclCommAbort on rank 1"));
  // And every later call of the survivors.
  CHECK(ncclAllReduce(d, d, 16, ncclFloat32, ncclSum, comms[0], nullptr) == ncclRemoteError);
  CHECK(cudaFree(d) == cudaSuccess);
}

TEST_CASE("NCCL argument checks: what NCCL would hang or fault on", "[emulator][nccl]") {
  using namespace evo::emu;
  const ResetErrorsAtExit reset;
  const ScopedDeviceCount devices(2);
  Comms comms(1);  // one rank: a collective completes in its own call
  float* d = device_copy(test::random_vector(32));
  std::vector<float> host(32, 1.f);

  CHECK(ncclAllReduce(host.data(), d, 32, ncclFloat32, ncclSum, comms[0], nullptr) ==
        ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("sendbuff") && Contains("is not device memory"));
  CHECK(ncclAllReduce(d, d, 33, ncclFloat32, ncclSum, comms[0], nullptr) == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("run past the end"));
  CHECK(ncclAllReduce(d, nullptr, 32, ncclFloat32, ncclSum, comms[0], nullptr) ==
        ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("recvbuff is null"));
  CHECK(ncclAllReduce(d, d, 8, ncclFloat16, ncclSum, comms[0], nullptr) == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("ncclFloat16 is not supported"));
  CHECK(ncclAllReduce(d, d, 8, ncclFloat32, ncclRedOp_t(5), comms[0], nullptr) ==
        ncclInvalidArgument);
  CHECK(ncclBroadcast(d, d, 8, ncclFloat32, 1, comms[0], nullptr) == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("root 1 is not a rank"));
  CHECK(ncclAllReduce(d, d, 8, ncclFloat32, ncclSum, nullptr, nullptr) == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("comm is null"));

  // Streams: a destroyed one, and one being captured into a graph.
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(ncclAllReduce(d, d, 8, ncclFloat32, ncclSum, comms[0], s) == ncclInvalidUsage);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("captured"));
  cudaGraph_t graph = nullptr;
  CHECK(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  CHECK(ncclAllReduce(d, d, 8, ncclFloat32, ncclSum, comms[0], s) == ncclSuccess);
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  CHECK(ncclAllReduce(d, d, 8, ncclFloat32, ncclSum, comms[0], s) == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("not a live stream"));

  // A bad call inside a group fails the group, which then runs none of it.
  const std::vector<float> before = host_copy(d, 32);
  REQUIRE(ncclGroupStart() == ncclSuccess);
  CHECK(ncclAllReduce(d, d, 32, ncclFloat32, ncclSum, comms[0], nullptr) == ncclSuccess);
  CHECK(ncclAllReduce(d, host.data(), 32, ncclFloat32, ncclSum, comms[0], nullptr) ==
        ncclInvalidArgument);
  CHECK(ncclGroupEnd() == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("ran none of its calls"));

  // A device with a sticky CUDA error runs no collective; another device still does.
  inject_error(cudaErrorIllegalAddress, 0);
  CHECK_THROWS_AS(examples::reduce_sum(test::random_vector(64), 1, 64), CudaError);
  CHECK(ncclAllReduce(d, d, 32, ncclFloat32, ncclSum, comms[0], nullptr) == ncclUnhandledCudaError);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("cudaErrorIllegalAddress"));
  ncclComm_t on_1 = nullptr;
  const int dev1 = 1;
  REQUIRE(ncclCommInitAll(&on_1, 1, &dev1) == ncclSuccess);
  CHECK(ncclAllReduce(d, d, 32, ncclFloat32, ncclMax, on_1, nullptr) == ncclSuccess);
  CHECK(ncclCommDestroy(on_1) == ncclSuccess);
  CHECK(ncclCommDestroy(on_1) == ncclInvalidArgument);  // twice
  CHECK(ncclAllReduce(d, d, 32, ncclFloat32, ncclMax, on_1, nullptr) == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("not a live communicator"));
  reset_errors();
  CHECK(host_copy(d, 32) == before);  // one rank's max and sum of itself: itself
  CHECK(cudaFree(d) == cudaSuccess);
  (void)cudaGetLastError();
}

TEST_CASE("NCCL communicators: init checks, queries, version, error strings", "[emulator][nccl]") {
  using namespace evo::emu;
  const ScopedDeviceCount devices(4);
  std::vector<ncclComm_t> c(3, nullptr);
  const int devlist[] = {2, 0, 3};
  REQUIRE(ncclCommInitAll(c.data(), 3, devlist) == ncclSuccess);
  for (int r = 0; r < 3; ++r) {
    int count = 0, device = -1, rank = -1;
    CHECK(ncclCommCount(c[std::size_t(r)], &count) == ncclSuccess);
    CHECK(ncclCommCuDevice(c[std::size_t(r)], &device) == ncclSuccess);
    CHECK(ncclCommUserRank(c[std::size_t(r)], &rank) == ncclSuccess);
    CHECK(count == 3);
    CHECK(device == devlist[r]);
    CHECK(rank == r);
  }
  // Ranks may go in any order; the clique lives until the last.
  for (int r : {1, 0, 2}) CHECK(ncclCommDestroy(c[std::size_t(r)]) == ncclSuccess);
  CHECK(ncclCommDestroy(nullptr) == ncclSuccess);

  CHECK(ncclCommInitAll(c.data(), 0, nullptr) == ncclInvalidArgument);
  const int twice[] = {1, 1};
  CHECK(ncclCommInitAll(c.data(), 2, twice) == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("rank 0's too"));
  const int missing[] = {0, 4};
  CHECK(ncclCommInitAll(c.data(), 2, missing) == ncclInvalidArgument);
  CHECK_THAT(ncclGetLastError(nullptr), Contains("device 4 is not one of the 4"));
  CHECK(ncclCommInitAll(c.data(), 5, nullptr) == ncclInvalidArgument);

  int version = 0;
  CHECK(ncclGetVersion(&version) == ncclSuccess);
  CHECK(version == EVO_EMU_NCCL_VERSION);
  CHECK_THAT(ncclGetErrorString(ncclInvalidUsage), Contains("invalid usage"));
  CHECK_THAT(ncclGetErrorString(ncclRemoteError), Contains("remote"));
  CHECK_THAT(ncclGetErrorString(ncclResult_t(99)), Contains("unknown"));
}

TEST_CASE("set_device_count changes the emulated device count at run time", "[emulator][nccl]") {
  using namespace evo::emu;
  const ScopedDeviceCount restore(1);
  int count = 0;
  set_device_count(3);
  CHECK(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK(count == 3);
  CHECK(cudaSetDevice(2) == cudaSuccess);
  CHECK(cudaSetDevice(0) == cudaSuccess);
  set_device_count(1);
  CHECK(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK(count == 1);
  CHECK(cudaSetDevice(2) == cudaErrorInvalidDevice);
  (void)cudaGetLastError();
  CHECK_THROWS_WITH(set_device_count(65), Contains("0 to 64"));
  CHECK_THROWS_AS(set_device_count(-1), EmuError);
}
