// libFuzzer target: the data-set readers (src/data*.cpp). The first byte picks the reader; the
// rest is the file: an IDX image file (with its label file cut from the same bytes), a CIFAR-10
// batch, or one image of a folder data set. Not the augmentation or the split (test_data).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "evo/data.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const int reader = data[0] % 3;
  const uint8_t* body = data + 1;
  const std::size_t n = size - 1;
  evo::fuzz::expect_value_or_error([&] {
    if (reader == 0) {  // IDX: data[1] picks where the label file starts
      const std::size_t cut = std::size_t(body[0]) * n / 256;
      const std::string images = evo::fuzz::write_file("images.idx", body + 1, cut > 0 ? cut - 1 : 0);
      const std::string labels = evo::fuzz::write_file("labels.idx", body + cut, n - cut);
      (void)evo::read_idx(images, labels, 10);
    } else if (reader == 1) {
      const std::string batch = evo::fuzz::write_file("batch.bin", body, n);
      (void)evo::read_cifar({batch}, 1, 10);
    } else {  // a folder data set of one class holding one image (PNG, JPEG, BMP: stb decides)
      const std::string root = evo::fuzz::scratch() + "/folder";
      std::filesystem::create_directories(root + "/a");
      evo::fuzz::write_file("folder/a/x.png", body, n);
      std::vector<std::string> classes;
      evo::DataOptions opts;
      (void)evo::read_image_folder(root, classes, opts);
    }
  });
  return 0;
}
