// Tests of the evo command line as a user meets it: help, exit codes, errors for bad options.
// Not tests of what the subcommands compute.
#include <array>
#include <cstdio>
#include <string>
#include <sys/wait.h>

#include "evo/device.h"
#include "support.h"

namespace {

struct Run {
  int code;
  std::string output;  // stdout and stderr together
};

Run run_evo(const std::string& args) {
  const std::string cmd = std::string(EVO_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  std::array<char, 4096> buf;
  while (std::size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace

TEST_CASE("evo --help lists every subcommand of the spec", "[cli]") {
  const Run r = run_evo("--help");
  CHECK(r.code == 0);
  for (const char* sub : {"search", "train", "eval", "show", "mutate", "report", "--gpus"})
    CHECK(r.output.find(sub) != std::string::npos);
}

TEST_CASE("Unknown options and bad values are usage errors with exit code 2", "[cli]") {
  Run r = run_evo("--no-such-option");
  CHECK(r.code == 2);
  CHECK(r.output.find("no-such-option") != std::string::npos);
  r = run_evo("search --selection best");
  CHECK(r.code == 2);
  r = run_evo("train");  // --dna is required
  CHECK(r.code == 2);
  CHECK(r.output.find("--dna") != std::string::npos);
  r = run_evo("--gpus 0-x");
  CHECK(r.code == 2);
  CHECK(r.output.find("not a GPU index or range") != std::string::npos);
}

TEST_CASE("Asking for a GPU that is not there is a clear error with exit code 2", "[cli]") {
  const evo::GpuInventory inv = evo::discover_gpus();
  const Run r = run_evo("--gpus " + std::to_string(inv.count));
  CHECK(r.code == 2);
  CHECK(r.output.find("GPU " + std::to_string(inv.count) + " is not there") != std::string::npos);
  CHECK(r.output.find("--gpus none") != std::string::npos);
}

TEST_CASE("evo status reports the devices and the data", "[cli]") {
  Run r = run_evo("status");
  CHECK(r.code == 0);
  CHECK(r.output.find("cpu      ready") != std::string::npos);
  CHECK(r.output.find("emu      ready") != std::string::npos);
  r = run_evo("status --json");
  CHECK(r.code == 0);
  CHECK(r.output.find("\"backends\"") != std::string::npos);
}

TEST_CASE("evo show prints a DNA's layers, and bad DNA files are clear errors", "[cli]") {
  Run r = run_evo("show " EVO_SOURCE_DIR "/data/dna/four_conv.json");
  CHECK(r.code == 0);
  CHECK(r.output.find("131,178") != std::string::npos);  // parameters, as data/dna/README.md says
  r = run_evo("show " EVO_SOURCE_DIR "/data/dna/four_conv.json --dot");
  CHECK(r.code == 0);
  CHECK(r.output.find("digraph") != std::string::npos);
  r = run_evo("show /nonexistent/dna.json");
  CHECK(r.code == 1);
  CHECK(r.output.find("/nonexistent/dna.json") != std::string::npos);
  r = run_evo("search --time-limit 3x --gpus none");
  CHECK(r.code == 2);
}
