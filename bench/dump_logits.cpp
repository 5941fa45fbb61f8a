// dump_logits: runs evo's CPU forward pass (inference mode) on a fixed-seed random batch and writes
// the input and logits as raw f32 files for bench/torch_reference.py check. Not a benchmark or test.
//
// usage: dump_logits DNA WEIGHTS OUT_INPUT.bin OUT_LOGITS.bin [--input HxWxC] [--classes K] [--n N]
// input.bin: f32 NHWC [n, H, W, C]; logits.bin: f32 [n, classes]; both little-endian, no header.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "evo/context.h"
#include "evo/dna.h"
#include "evo/model.h"

namespace {

void write_raw(const std::string& path, const float* data, std::size_t count) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(count * sizeof(float)));
  if (!f) {
    std::fprintf(stderr, "dump_logits: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr,
                 "usage: dump_logits DNA WEIGHTS INPUT.bin LOGITS.bin [--input HxWxC] "
                 "[--classes K] [--n N]\n");
    return 2;
  }
  int h = 28, w = 28, c = 1, classes = 10, n = 50;
  for (int i = 5; i + 1 < argc; i += 2) {
    const std::string opt = argv[i];
    if (opt == "--input") {
      if (std::sscanf(argv[i + 1], "%dx%dx%d", &h, &w, &c) != 3) return 2;
    } else if (opt == "--classes") {
      classes = std::atoi(argv[i + 1]);
    } else if (opt == "--n") {
      n = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "dump_logits: unknown option %s\n", opt.c_str());
      return 2;
    }
  }
  try {
    const evo::Dna dna = evo::load_dna(argv[1]);
    const evo::CompiledDna plan = evo::compile(dna, h, w, c, classes);
    evo::Context ctx(evo::Device::cpu(), 1);
    evo::Weights weights = evo::load_weights(argv[2], plan, evo::Device::cpu());
    evo::Model model(plan, n, ctx);
    model.bind(weights);

    const std::size_t in_count = std::size_t(n) * h * w * c;
    std::vector<float> x(in_count);
    std::mt19937 gen(12345);
    std::normal_distribution<float> dist(0.f, 1.f);
    for (float& v : x) v = dist(gen);
    std::memcpy(model.input(), x.data(), in_count * sizeof(float));

    model.forward(n, false);
    ctx.synchronize();
    write_raw(argv[3], x.data(), in_count);
    write_raw(argv[4], model.logits(), std::size_t(n) * classes);
    std::printf("wrote %s [%d,%d,%d,%d] and %s [%d,%d]\n", argv[3], n, h, w, c, argv[4], n,
                classes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dump_logits: %s\n", e.what());
    return 1;
  }
  return 0;
}
