// The whole CPU forward pass (inference mode) against an independent PyTorch build of the same net:
// bench/dump_logits + bench/torch_reference.py check. Not a speed test; skips without PyTorch,
// except under CI (tools/test.sh installs it there).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

namespace fs = std::filesystem;

using evo::test::shell;

TEST_CASE("forward pass matches a PyTorch reference", "[torch][model]") {
  if (shell("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0) {
    // tools/test.sh installs Debian's python3-torch, so in CI the reference always runs.
    if (evo::test::references_required())
      FAIL("PyTorch missing under CI or tools/test.sh (which installs python3-torch)");
    WARN("PyTorch missing: skipped (apt-get install python3-torch)");
    return;
  }
  const fs::path evo = EVO_BINARY;
  const fs::path dump = evo.parent_path() / "bench" / "dump_logits";
  if (!fs::exists(dump)) {
    WARN("dump_logits not built (" + dump.string() + "): skipped");
    return;
  }
  if (!fs::exists("/usr/share/datasets/fashion-mnist")) {
    WARN("Fashion-MNIST missing: skipped");
    return;
  }
  const fs::path src = EVO_SOURCE_DIR;
  const fs::path tmp = fs::temp_directory_path() / ("evo_torch_ref_" + std::to_string(::getpid()));
  fs::create_directories(tmp);

  for (const char* name : {"four_conv", "skips"}) {
    {
      INFO(name);
      const fs::path dna = src / "data" / "dna" / (std::string(name) + ".json");
      const fs::path out = tmp / name;
      fs::create_directories(out);
      // A few steps so the batch-norm running statistics are no longer 0 and 1.
      const std::string train = "'" + evo.string() + "' train --dna '" + dna.string() +
                                "' --steps 20 --max-train 2000 --json --out '" + out.string() +
                                "' > '" + (out / "train.log").string() + "' 2>&1";
      REQUIRE(shell(train) == 0);
      const std::string weights = (out / "weights.evow").string();
      const std::string input = (out / "input.bin").string();
      const std::string logits = (out / "logits.bin").string();
      REQUIRE(shell("'" + dump.string() + "' '" + dna.string() + "' '" + weights + "' '" + input +
                    "' '" + logits + "'") == 0);
      const std::string check = "/usr/bin/python3 '" +
                                (src / "bench" / "torch_reference.py").string() + "' check --dna '" +
                                dna.string() + "' --weights '" + weights + "' --input '" + input +
                                "' --logits '" + logits + "'";
      INFO(check);
      CHECK(shell(check) == 0);
    }
  }
  std::error_code ec;
  fs::remove_all(tmp, ec);
}
