// Data sets in host memory: loaders (MNIST-style IDX, CIFAR-10/100 binaries, a folder of images),
// the validation split, per-channel statistics. Not batching, augmentation or device upload.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "evo/error.h"

namespace evo {

// A data file that is missing, truncated or corrupt. what() names the file and, when the problem
// is at a known place, the byte offset (of the uncompressed data for a .gz file).
class DataError : public Error {
 public:
  // offset < 0: the problem has no single place (a missing file, a folder without classes).
  DataError(std::string file, int64_t offset, std::string reason);
  const std::string& file() const { return file_; }
  int64_t offset() const { return offset_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string file_;
  int64_t offset_;
  std::string reason_;
};

// Images as uint8 NHWC, channels last: pixels[((i * h + y) * w + x) * c + ch].
struct ImageSet {
  int n = 0, h = 0, w = 0, c = 0;
  std::vector<uint8_t> pixels;  // [n, h, w, c]
  std::vector<int32_t> labels;  // [n], 0 .. classes-1

  int64_t image_size() const { return int64_t(h) * w * c; }
  const uint8_t* image(int i) const { return pixels.data() + i * image_size(); }
  // The images at `indices`, in that order.
  ImageSet subset(const std::vector<int>& indices) const;
};

struct Dataset {
  std::string name;    // "fashion-mnist", "mnist", "cifar10", "cifar100", "folder"
  std::string source;  // the directory it was read from
  int classes = 0;
  std::vector<std::string> class_names;
  ImageSet train, val, test;  // val is held out of the training files; test comes from its own
  // Per-channel mean and standard deviation of the TRAINING split's pixels, in pixel units
  // (0..255): standardise with (pixel - mean[c]) / std[c]. A constant channel gets std 1.
  std::vector<float> mean, std;
};

enum class ResizeFilter { Nearest, Bilinear };

struct DataOptions {
  // Share of the training files held out for validation (the paper: 5,000 of CIFAR's 50,000),
  // chosen at random but deterministically from `seed`.
  double val_fraction = 0.1;
  uint64_t seed = 0;
  // Caps for quick runs; 0 = all. A capped split is a seeded random subset, never the first N
  // (folder data sets are sorted by class).
  int max_train = 0, max_val = 0, max_test = 0;
  // folder: only. Every image is brought to height x width (0 = the first image's size) and to
  // `channels` (0 = 3 when any image has colour, else 1; 1 or 3 to force).
  int folder_height = 0, folder_width = 0, folder_channels = 0;
  ResizeFilter folder_resize = ResizeFilter::Bilinear;
  // folder: without train/ and test/ sub-folders, this share of the images becomes the test set.
  double folder_test_fraction = 0.1;
};

// Loads a data set from a SPEC (see kDataSpecHelp) and splits off the validation set.
Dataset load_dataset(const std::string& spec, const DataOptions& opts = {});

inline constexpr const char* kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kDataSpecHelp =
    "fashion-mnist (from /usr/share/datasets/fashion-mnist), fashion-mnist:DIR, mnist:DIR, "
    "cifar10:DIR, cifar100:DIR (the binary versions), folder:DIR (one sub-folder per class)";

// ---- the pieces, for tests and tools ---------------------------------------------------------

// A whole file's bytes; gzip (any file starting with 1f 8b) is inflated and *gzipped set. Errors
// name the file and the compressed byte offset for a corrupt or truncated gzip stream.
std::vector<uint8_t> read_file_bytes(const std::string& path, bool* gzipped = nullptr);

// One IDX image file (magic 0x00000803, dims N, H, W) and its label file (0x00000801, N), gzipped
// or not. Labels must be below `classes`.
ImageSet read_idx(const std::string& images_path, const std::string& labels_path, int classes);

// CIFAR binary batches: records of `label_bytes` label bytes (1 for CIFAR-10; 2 for CIFAR-100:
// coarse then fine, the fine one is used) then 3072 bytes of 32x32 RGB, channel planes (CHW).
ImageSet read_cifar(const std::vector<std::string>& paths, int label_bytes, int classes);

// A folder with one sub-folder per class (sorted names = labels 0, 1, ...) of PNG/JPEG/BMP images.
// `class_names` receives the sub-folder names; when it is not empty on entry, it is the required
// list (a test folder must use the training folder's classes).
ImageSet read_image_folder(const std::string& dir, std::vector<std::string>& class_names,
                           const DataOptions& opts);

// Deterministic split: `count` indices of 0..n-1 chosen uniformly by `seed` (sorted), and the rest
// (sorted). The same n, count and seed give the same split on every platform.
void split_indices(int n, int count, uint64_t seed, std::vector<int>& chosen,
                   std::vector<int>& rest);

// Per-channel mean and (population) standard deviation of a set's pixels.
void channel_stats(const ImageSet& set, std::vector<float>& mean, std::vector<float>& std);

// Resizes one HWC uint8 image (used by the folder loader; exposed for tests).
std::vector<uint8_t> resize_image(const uint8_t* src, int h, int w, int c, int out_h, int out_w,
                                  ResizeFilter filter);

}  // namespace evo
