// Data sets in host memory: loaders (MNIST-style IDX, CIFAR-10/100 binaries, a folder of images),
// the validation split, per-channel statistics. Not batching, augmentation or device upload.
#pragma once

#include <cstdint>
#include <memory>
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

// ---- limits -----------------------------------------------------------------------------------
// Every size a data file declares (an IDX header, a CIFAR file's length, an image's header) is
// checked against these BEFORE anything that large is allocated or read, so a damaged or hostile
// file costs a clear DataError instead of all the memory there is. data/README.md lists them too.

// The most bytes one IDX file may hold, uncompressed (header and data). EMNIST ByClass, the
// largest IDX data set we know of, is 697,932 x 28 x 28 = 547 MB; Fashion-MNIST's training images
// are 47 MB. A gzipped IDX file is inflated into exactly the size its header promises (at most
// this), so a gzip bomb or a lying gzip trailer costs nothing beyond that.
inline constexpr uint64_t kMaxIdxBytes = uint64_t(1) << 30;  // 1 GiB

// The most records one CIFAR binary file may hold. CIFAR-100's train.bin, the largest file of
// either data set, holds 50,000 (3,074 bytes each: 154 MB); twice that caps what one file, or what
// a gzipped one inflates to, at 307 MB.
inline constexpr int64_t kMaxCifarRecords = 100000;

// The largest side of an image: IDX rows and columns, and every image of a folder data set (its
// header is read before it is decoded). A 4096 x 4096 RGB image is 48 MiB decoded, and one batch
// of 50 of them 9.4 GiB as float on a GPU: far beyond what the paper's search (32 x 32) can train.
inline constexpr int kMaxImageSide = 4096;

// The most bytes one image file of a folder data set may have. The largest image evo accepts,
// 4096 x 4096 RGBA stored uncompressed (BMP), is 64 MiB; anything bigger is not such an image, and
// stb_image would read a PNG's compressed data whole before finding out.
inline constexpr uint64_t kMaxImageFileBytes = uint64_t(128) << 20;  // 128 MiB

// The most images one folder data set (or its train/ or test/ half) may hold: 4.2 million, 3x
// ImageNet-1k's 1.28 million training images. Each costs a path (~100 bytes) and a header read
// before any pixel is decoded.
inline constexpr int kMaxFolderImages = 1 << 22;

// The most bytes the decoded pixels of one folder data set (or half) may take once brought to one
// size: images x height x width x channels. 4 GiB is 87,000 RGB images of 128 x 128 or 28,000 of
// 224 x 224; load_dataset holds the set and its train/validation subsets at once (~2x at peak),
// which is what a workstation has.
inline constexpr uint64_t kMaxFolderBytes = uint64_t(4) << 30;  // 4 GiB

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

// One data file's content, read front to back with a bound. The file is checked before anything
// is read: it must be a regular file (not a directory, device or FIFO) of at most max_bytes, or,
// when gzipped (it starts with 1f 8b, whatever its name), compressed to about that. A gzip file is
// inflated as it is read, straight into the caller's buffer, and more than max_bytes of content is
// an error at once: what a file inflates to is never held whole, and its trailer is never trusted.
// Every error is a DataError naming the file; gzip damage at its compressed byte offset.
// Not seekable, not for writing, not for images (stb_image reads those).
class DataFile {
 public:
  // `limit` completes "more than ..." in errors: what max_bytes is and which constant sets it, e.g.
  // "the 1.0 GiB an IDX file may hold (evo::kMaxIdxBytes)".
  DataFile(const std::string& path, uint64_t max_bytes, const std::string& limit);
  ~DataFile();
  DataFile(const DataFile&) = delete;
  DataFile& operator=(const DataFile&) = delete;

  const std::string& path() const;
  bool gzipped() const;
  uint64_t disk_size() const;  // bytes on disk; the content's size unless gzipped
  uint64_t position() const;   // content bytes read so far

  // Reads up to n content bytes into dst; fewer only at the end of the content (for gzip, after its
  // CRC and length were checked).
  std::size_t read(uint8_t* dst, std::size_t n);

  // How many content bytes follow the position: counted up to cap, cap + 1 meaning "more". A gzip
  // file is inflated that far (into a small scratch buffer) and, when it ends within it, checked to
  // its end: call this before trusting what read() returned.
  uint64_t rest(uint64_t cap);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One IDX image file (magic 0x00000803, dims N, H, W) and its label file (0x00000801, N), gzipped
// or not. Labels must be below `classes`. Each header is checked (H, W at most kMaxImageSide, the
// whole file at most kMaxIdxBytes) before its data is read, into exactly the size it promises.
ImageSet read_idx(const std::string& images_path, const std::string& labels_path, int classes);

// CIFAR binary batches: records of `label_bytes` label bytes (1 for CIFAR-10; 2 for CIFAR-100:
// coarse then fine, the fine one is used) then 3072 bytes of 32x32 RGB, channel planes (CHW).
// Each file: a whole number of records, at most kMaxCifarRecords, gzipped or not.
ImageSet read_cifar(const std::vector<std::string>& paths, int label_bytes, int classes);

// A folder with one sub-folder per class (sorted names = labels 0, 1, ...) of PNG/JPEG/BMP images.
// `class_names` receives the sub-folder names; when it is not empty on entry, it is the required
// list (a test folder must use the training folder's classes). Every image's header is read
// first: 1 to kMaxImageSide pixels a side, files of at most kMaxImageFileBytes, at most
// kMaxFolderImages images and kMaxFolderBytes of pixels in all; an image outside these limits, or
// an entry that cannot be examined (a symbolic-link loop), is a DataError naming it, never skipped:
// a data set that silently lost images would train on something else than its owner thinks.
ImageSet read_image_folder(const std::string& dir, std::vector<std::string>& class_names,
                           const DataOptions& opts);

// Deterministic split: `count` indices of 0..n-1 chosen uniformly by `seed` (sorted), and the rest
// (sorted). The same n, count and seed give the same split on every platform.
void split_indices(int n, int count, uint64_t seed, std::vector<int>& chosen,
                   std::vector<int>& rest);

// Per-channel mean and (population) standard deviation of a set's pixels.
void channel_stats(const ImageSet& set, std::vector<float>& mean, std::vector<float>& std);

// Resizes one HWC uint8 image (used by the folder loader; exposed for tests). Every size must be at
// least 1 (an evo::Error otherwise: there is no pixel to read from or write to).
std::vector<uint8_t> resize_image(const uint8_t* src, int h, int w, int c, int out_h, int out_w,
                                  ResizeFilter filter);

}  // namespace evo
