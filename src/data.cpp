// Data sets: the SPEC strings, file reading (gzip included), the seeded validation split and the
// per-channel statistics. Not the formats themselves (data_idx.cpp, _cifar.cpp, _folder.cpp).
#include "evo/data.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace evo {

namespace fs = std::filesystem;

DataError::DataError(std::string file, int64_t offset, std::string reason)
    : Error(file + ": " + (offset >= 0 ? "byte offset " + std::to_string(offset) + ": " : "") +
            reason),
      file_(std::move(file)),
      offset_(offset),
      reason_(std::move(reason)) {}

ImageSet ImageSet::subset(const std::vector<int>& indices) const {
  ImageSet s;
  s.n = int(indices.size());
  s.h = h, s.w = w, s.c = c;
  const int64_t size = image_size();
  s.pixels.resize(std::size_t(s.n * size));
  s.labels.resize(std::size_t(s.n));
  for (int k = 0; k < s.n; ++k) {
    std::copy_n(image(indices[k]), size, s.pixels.data() + k * size);
    s.labels[k] = labels[indices[k]];
  }
  return s;
}

namespace {

std::vector<uint8_t> read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    const int err = errno;
    throw DataError(path, -1, std::string("cannot open: ") + std::strerror(err));
  }
  const std::streamsize size = in.tellg();
  std::vector<uint8_t> bytes(std::size_t(std::max<std::streamsize>(size, 0)));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), size))
    throw DataError(path, -1, "reading failed after " + std::to_string(in.gcount()) + " bytes");
  return bytes;
}

// Inflates every gzip member of `raw`. Offsets in errors are into the compressed file, where the
// damage is.
std::vector<uint8_t> gunzip(const std::string& path, const std::vector<uint8_t>& raw) {
  // The trailer's ISIZE (size mod 2^32 of the last member) is only a hint for the first buffer.
  std::size_t hint = 1 << 20;
  if (raw.size() >= 18) {
    const uint8_t* t = raw.data() + raw.size() - 4;
    hint = std::clamp<std::size_t>(t[0] | t[1] << 8 | t[2] << 16 | std::size_t(t[3]) << 24, 1 << 16,
                                   std::size_t(1) << 30);
  }
  std::vector<uint8_t> out(hint);
  std::size_t produced = 0;
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK)  // 15: largest window; +16: expect a gzip wrapper
    throw DataError(path, -1, "zlib could not start (out of memory?)");
  z.next_in = const_cast<Bytef*>(raw.data());
  std::size_t consumed = 0;
  auto fail = [&](int64_t offset, const std::string& reason) {
    inflateEnd(&z);
    throw DataError(path, offset, reason);
  };
  for (;;) {
    if (produced == out.size()) out.resize(out.size() * 2);
    // zlib counts in 32 bits: feed at most 1 GiB at a time.
    const std::size_t in_left = raw.size() - consumed;
    z.next_in = const_cast<Bytef*>(raw.data() + consumed);
    z.avail_in = uInt(std::min<std::size_t>(in_left, 1u << 30));
    z.next_out = out.data() + produced;
    z.avail_out = uInt(std::min<std::size_t>(out.size() - produced, 1u << 30));
    const uInt avail_in = z.avail_in, avail_out = z.avail_out;
    const int rc = inflate(&z, Z_NO_FLUSH);
    consumed += avail_in - z.avail_in;
    produced += avail_out - z.avail_out;
    if (rc == Z_STREAM_END) {
      // Another member may follow (concatenated .gz files); trailing zero padding is tolerated.
      const bool more =
          consumed + 2 <= raw.size() && raw[consumed] == 0x1f && raw[consumed + 1] == 0x8b;
      if (!more) {
        for (std::size_t k = consumed; k < raw.size(); ++k)
          if (raw[k] != 0) fail(int64_t(k), "unexpected bytes after the end of the gzip stream");
        break;
      }
      inflateReset(&z);
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && consumed == raw.size())
      fail(int64_t(raw.size()),
           "the gzip stream ends early (after " + std::to_string(produced) +
               " uncompressed bytes): the file is truncated; download it again");
    if (rc == Z_BUF_ERROR) continue;  // output buffer full: grown at the top of the loop
    fail(int64_t(consumed), std::string("corrupt gzip data (zlib: ") + (z.msg ? z.msg : "error") +
                                "); download the file again");
  }
  inflateEnd(&z);
  out.resize(produced);
  return out;
}

// SplitMix64: turns (seed, purpose) into independent seeds for the separate random choices.
uint64_t mix_seed(uint64_t seed, uint64_t purpose) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (purpose + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, bound) by rejection, from the raw 64-bit output: unlike
// std::uniform_int_distribution, the same on every standard library.
uint64_t uniform_below(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do x = gen();
  while (x >= limit);
  return x % bound;
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path, bool* gzipped) {
  std::vector<uint8_t> raw = read_raw(path);
  const bool gz = raw.size() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b;
  if (gzipped) *gzipped = gz;
  return gz ? gunzip(path, raw) : raw;
}

void split_indices(int n, int count, uint64_t seed, std::vector<int>& chosen,
                   std::vector<int>& rest) {
  if (count < 0 || count > n)
    throw Error("split_indices: cannot choose " + std::to_string(count) + " of " +
                std::to_string(n));
  // Partial Fisher-Yates: the first `count` slots become a uniform random sample.
  std::vector<int> order(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 gen(seed);
  for (int i = 0; i < count; ++i)
    std::swap(order[i], order[i + int(uniform_below(gen, uint64_t(n - i)))]);
  chosen.assign(order.begin(), order.begin() + count);
  rest.assign(order.begin() + count, order.end());
  std::sort(chosen.begin(), chosen.end());
  std::sort(rest.begin(), rest.end());
}

void channel_stats(const ImageSet& set, std::vector<float>& mean, std::vector<float>& std) {
  // Exact integer sums: 255^2 times even a billion pixels fits in 64 bits.
  std::vector<uint64_t> sum(std::size_t(set.c), 0), sum_sq(std::size_t(set.c), 0);
  const std::size_t total = set.pixels.size();
  for (std::size_t i = 0; i < total; i += std::size_t(set.c))
    for (int ch = 0; ch < set.c; ++ch) {
      const uint64_t p = set.pixels[i + ch];
      sum[ch] += p;
      sum_sq[ch] += p * p;
    }
  const double count = double(total / std::max(1, set.c));
  mean.assign(std::size_t(set.c), 0.f);
  std.assign(std::size_t(set.c), 1.f);
  for (int ch = 0; ch < set.c && count > 0; ++ch) {
    const double m = double(sum[ch]) / count;
    const double var = std::max(0.0, double(sum_sq[ch]) / count - m * m);
    mean[ch] = float(m);
    std[ch] = var > 0 ? float(std::sqrt(var)) : 1.f;  // a constant channel: leave it unscaled
  }
}

// ---- SPEC strings -----------------------------------------------------------------------------

namespace {

// The first of `names` that exists in `dir` (each also tried with .gz), for the error otherwise.
std::string find_file(const fs::path& dir, const std::vector<std::string>& names) {
  for (const std::string& name : names)
    for (const char* suffix : {"", ".gz"})
      if (fs::exists(dir / (name + suffix))) return (dir / (name + suffix)).string();
  throw DataError((dir / names[0]).string(), -1,
                  "not found (looked for " + names[0] + " and " + names[0] +
                      ".gz in this folder); check the data SPEC's DIR");
}

// Looks for `first` in dir or one of its usual sub-folders (what the archives unpack to).
fs::path find_dir_with(const fs::path& dir, const std::string& first,
                       const std::vector<std::string>& subdirs) {
  if (fs::exists(dir / first)) return dir;
  for (const std::string& sub : subdirs)
    if (fs::exists(dir / sub / first)) return dir / sub;
  std::string where = dir.string();
  for (const std::string& sub : subdirs) where += " or " + (dir / sub).string();
  throw DataError((dir / first).string(), -1,
                  "not found in " + where + "; unpack the binary version of the data set there");
}

Dataset load_idx_dataset(const std::string& name, const fs::path& dir) {
  Dataset d;
  d.name = name;
  d.classes = 10;
  if (name == "fashion-mnist")
    d.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  else
    d.class_names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  // The Debian package and the original downloads use dashes; some mirrors use a dot.
  auto path = [&](const char* stem, const char* kind) {
    return find_file(dir, {std::string(stem) + "-" + kind + "-ubyte",
                           std::string(stem) + "." + kind + "-ubyte"});
  };
  if (!fs::is_directory(dir))
    throw DataError(dir.string(), -1,
                    "is not a folder; it should hold train-images-idx3-ubyte, "
                    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
                    "(each may be .gz)" +
                        std::string(name == "fashion-mnist"
                                        ? "; apt-get install dataset-fashion-mnist puts them in " +
                                              std::string(kFashionMnistDefaultDir)
                                        : ""));
  // Looked up one by one, so a missing file is reported in a fixed order.
  const std::string train_images = path("train-images", "idx3");
  const std::string train_labels = path("train-labels", "idx1");
  const std::string test_images = path("t10k-images", "idx3");
  const std::string test_labels = path("t10k-labels", "idx1");
  d.train = read_idx(train_images, train_labels, d.classes);
  d.test = read_idx(test_images, test_labels, d.classes);
  return d;
}

Dataset load_cifar10(const fs::path& dir_in) {
  const fs::path dir = find_dir_with(dir_in, "data_batch_1.bin", {"cifar-10-batches-bin"});
  Dataset d;
  d.name = "cifar10";
  d.classes = 10;
  d.class_names = {"airplane", "automobile", "bird",  "cat",  "deer",
                   "dog",      "frog",       "horse", "ship", "truck"};
  std::vector<std::string> train;
  for (int i = 1; i <= 5; ++i)
    train.push_back((dir / ("data_batch_" + std::to_string(i) + ".bin")).string());
  d.train = read_cifar(train, 1, d.classes);
  d.test = read_cifar({(dir / "test_batch.bin").string()}, 1, d.classes);
  return d;
}

Dataset load_cifar100(const fs::path& dir_in) {
  const fs::path dir = find_dir_with(dir_in, "train.bin", {"cifar-100-binary"});
  Dataset d;
  d.name = "cifar100";
  d.classes = 100;
  d.class_names = {
      "apple",       "aquarium_fish", "baby",      "bear",       "beaver",       "bed",
      "bee",         "beetle",        "bicycle",   "bottle",     "bowl",         "boy",
      "bridge",      "bus",           "butterfly", "camel",      "can",          "castle",
      "caterpillar", "cattle",        "chair",     "chimpanzee", "clock",        "cloud",
      "cockroach",   "couch",         "crab",      "crocodile",  "cup",          "dinosaur",
      "dolphin",     "elephant",      "flatfish",  "forest",     "fox",          "girl",
      "hamster",     "house",         "kangaroo",  "keyboard",   "lamp",         "lawn_mower",
      "leopard",     "lion",          "lizard",    "lobster",    "man",          "maple_tree",
      "motorcycle",  "mountain",      "mouse",     "mushroom",   "oak_tree",     "orange",
      "orchid",      "otter",         "palm_tree", "pear",       "pickup_truck", "pine_tree",
      "plain",       "plate",         "poppy",     "porcupine",  "possum",       "rabbit",
      "raccoon",     "ray",           "road",      "rocket",     "rose",         "sea",
      "seal",        "shark",         "shrew",     "skunk",      "skyscraper",   "snail",
      "snake",       "spider",        "squirrel",  "streetcar",  "sunflower",    "sweet_pepper",
      "table",       "tank",          "telephone", "television", "tiger",        "tractor",
      "train",       "trout",         "tulip",     "turtle",     "wardrobe",     "whale",
      "willow_tree", "wolf",          "woman",     "worm"};
  d.train = read_cifar({(dir / "train.bin").string()}, 2, d.classes);
  d.test = read_cifar({(dir / "test.bin").string()}, 2, d.classes);
  return d;
}

Dataset load_folder(const fs::path& dir, const DataOptions& opts) {
  if (!fs::is_directory(dir))
    throw DataError(dir.string(), -1, "is not a folder; folder:DIR needs one sub-folder per class");
  Dataset d;
  d.name = "folder";
  if (fs::is_directory(dir / "train") && fs::is_directory(dir / "test")) {
    d.train = read_image_folder((dir / "train").string(), d.class_names, opts);
    // The test images take the training images' size and channels.
    DataOptions fixed = opts;
    fixed.folder_height = d.train.h;
    fixed.folder_width = d.train.w;
    fixed.folder_channels = d.train.c;
    d.test = read_image_folder((dir / "test").string(), d.class_names, fixed);
  } else {
    const ImageSet all = read_image_folder(dir.string(), d.class_names, opts);
    if (!(opts.folder_test_fraction >= 0 && opts.folder_test_fraction < 1))
      throw UsageError("folder_test_fraction must be in [0, 1), not " +
                       std::to_string(opts.folder_test_fraction));
    std::vector<int> test, train;
    split_indices(all.n, int(std::llround(opts.folder_test_fraction * all.n)),
                  mix_seed(opts.seed, 1), test, train);
    d.train = all.subset(train);
    d.test = all.subset(test);
  }
  d.classes = int(d.class_names.size());
  return d;
}

// A seeded random subset of at most `cap` images (0 = no cap), in the original order.
ImageSet capped(const ImageSet& set, int cap, uint64_t seed) {
  if (cap <= 0 || cap >= set.n) return set;
  std::vector<int> keep, drop;
  split_indices(set.n, cap, seed, keep, drop);
  return set.subset(keep);
}

}  // namespace

Dataset load_dataset(const std::string& spec, const DataOptions& opts) {
  const std::size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string dir = colon == std::string::npos ? "" : spec.substr(colon + 1);
  const bool known = kind == "fashion-mnist" || kind == "mnist" || kind == "cifar10" ||
                     kind == "cifar100" || kind == "folder";
  if (!known)
    throw UsageError("unknown data spec \"" + spec + "\"; the forms are: " + kDataSpecHelp);
  if (colon != std::string::npos && dir.empty())
    throw UsageError("data spec \"" + spec + "\" has an empty DIR after the colon");
  if (dir.empty() && kind != "fashion-mnist")
    throw UsageError("data spec \"" + spec + "\" needs a folder: " + kind + ":DIR");
  if (!(opts.val_fraction >= 0 && opts.val_fraction < 1))
    throw UsageError("the validation fraction must be in [0, 1), not " +
                     std::to_string(opts.val_fraction));

  Dataset d;
  if (kind == "fashion-mnist" || kind == "mnist")
    d = load_idx_dataset(kind, dir.empty() ? fs::path(kFashionMnistDefaultDir) : fs::path(dir));
  else if (kind == "cifar10")
    d = load_cifar10(dir);
  else if (kind == "cifar100")
    d = load_cifar100(dir);
  else
    d = load_folder(dir, opts);
  d.source = dir.empty() ? kFashionMnistDefaultDir : dir;

  // Hold out the validation images from the training files; the test files stay apart.
  const int val_count = int(std::llround(opts.val_fraction * d.train.n));
  if (val_count >= d.train.n)
    throw UsageError("holding out " + std::to_string(val_count) + " of " +
                     std::to_string(d.train.n) + " training images leaves none to train on");
  std::vector<int> val, train;
  split_indices(d.train.n, val_count, mix_seed(opts.seed, 0), val, train);
  d.val = capped(d.train.subset(val), opts.max_val, mix_seed(opts.seed, 3));
  d.train = capped(d.train.subset(train), opts.max_train, mix_seed(opts.seed, 2));
  d.test = capped(d.test, opts.max_test, mix_seed(opts.seed, 4));
  channel_stats(d.train, d.mean, d.std);
  return d;
}

}  // namespace evo
