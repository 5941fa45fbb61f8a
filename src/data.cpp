// Data sets: SPEC strings, bounded file reading (DataFile, gzip inflated as it is read), the
// seeded validation split, channel statistics. Not the formats (data_idx, _cifar, _folder.cpp).
#include "evo/data.h"
#include "evo/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
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

// ---- DataFile ---------------------------------------------------------------------------------

struct DataFile::Impl {
  std::string path, limit;
  uint64_t max_bytes = 0, disk_size = 0;
  uint64_t produced = 0;  // content bytes handed out (or counted by rest())
  int fd = -1;
  bool gz = false;
  bool done = false;  // gzip: the last member's end (CRC, length) and what follows were checked
  z_stream z{};
  bool z_live = false;
  // Compressed (or, before the first read, raw) bytes: [in_pos, in_end) are not used yet. 256 KiB:
  // ~100 read() calls for Fashion-MNIST's 26 MB of gzip, and small next to any data set.
  std::vector<uint8_t> in = std::vector<uint8_t>(std::size_t(256) << 10);
  std::size_t in_pos = 0, in_end = 0;
  uint64_t in_file = 0;  // file offset of in[0]
  bool eof = false;

  ~Impl() {
    if (z_live) inflateEnd(&z);
    if (fd >= 0) ::close(fd);
  }

  [[noreturn]] void fail(int64_t offset, const std::string& reason) const {
    throw DataError(path, offset, reason);
  }

  // Tops `in` up to at least `want` unused bytes unless the file ends first; the count there is.
  std::size_t fill(std::size_t want) {
    if (in_end - in_pos >= want || eof) return in_end - in_pos;
    std::memmove(in.data(), in.data() + in_pos, in_end - in_pos);
    in_file += in_pos;
    in_end -= in_pos;
    in_pos = 0;
    while (in_end < want && !eof) {
      const ssize_t n = ::read(fd, in.data() + in_end, in.size() - in_end);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        fail(int64_t(in_file + in_end), std::string("reading failed: ") + std::strerror(errno));
      if (n == 0) eof = true;
      in_end += std::size_t(n);
    }
    return in_end - in_pos;
  }

  std::size_t read_plain(uint8_t* dst, std::size_t n) {
    std::size_t got = std::min(n, in_end - in_pos);  // what the gzip check peeked at first
    std::memcpy(dst, in.data() + in_pos, got);
    in_pos += got;
    while (got < n) {
      const ssize_t r = ::read(fd, dst + got, std::min<std::size_t>(n - got, std::size_t(1) << 30));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0)
        fail(int64_t(produced + got), std::string("reading failed: ") + std::strerror(errno));
      if (r == 0) break;  // shrank while we read: the callers' size checks say what is missing
      got += std::size_t(r);
    }
    return got;
  }

  // After a member's end: another member may follow (concatenated .gz files); trailing zero
  // padding (tar blocks) is tolerated; anything else is damage.
  void member_end() {
    if (fill(2) >= 2 && in[in_pos] == 0x1f && in[in_pos + 1] == 0x8b) {
      inflateReset(&z);
      return;
    }
    for (;;) {
      for (; in_pos < in_end; ++in_pos)
        if (in[in_pos] != 0)
          fail(int64_t(in_file + in_pos), "unexpected bytes after the end of the gzip stream");
      if (fill(1) == 0) break;
    }
    done = true;
  }

  // Inflates up to n bytes into dst; fewer only at the stream's end. No limit: callers bound n.
  std::size_t inflate_into(uint8_t* dst, std::size_t n) {
    std::size_t got = 0;
    while (got < n && !done) {
      if (in_pos == in_end) fill(1);
      z.next_in = in.data() + in_pos;
      z.avail_in = uInt(in_end - in_pos);  // at most the 256 KiB buffer
      z.next_out = dst + got;
      // zlib counts in 32 bits: at most 1 GiB of output per call.
      z.avail_out = uInt(std::min<std::size_t>(n - got, std::size_t(1) << 30));
      const uInt avail_in = z.avail_in, avail_out = z.avail_out;
      const int rc = inflate(&z, Z_NO_FLUSH);
      in_pos += avail_in - z.avail_in;
      got += avail_out - z.avail_out;
      if (rc == Z_STREAM_END) {
        member_end();
      } else if (rc == Z_BUF_ERROR && in_pos == in_end && eof) {
        fail(int64_t(disk_size),
             "the gzip stream ends early (after " + std::to_string(produced + got) +
                 " uncompressed bytes): the file is truncated; download it again");
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {  // Z_BUF_ERROR otherwise: refilled at the top
        fail(int64_t(in_file + in_pos),
             std::string(rc == Z_MEM_ERROR ? "zlib ran out of memory" : "corrupt gzip data") +
                 " (zlib: " + (z.msg ? z.msg : "error") + "); download the file again");
      }
    }
    return got;
  }
};

DataFile::DataFile(const std::string& path, uint64_t max_bytes, const std::string& limit)
    : impl_(std::make_unique<Impl>()) {
  Impl& f = *impl_;
  f.path = path;
  f.limit = limit;
  f.max_bytes = max_bytes;
  // O_NONBLOCK: opening a FIFO with no writer must not hang before fstat can refuse it.
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (f.fd < 0) {
    const int err = errno;
    f.fail(-1, std::string("cannot open: ") + std::strerror(err) +
                   (err == ENOENT ? "; check the data SPEC's DIR" : ""));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) f.fail(-1, std::string("cannot stat: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode))
    f.fail(-1,
           "is a directory, not a data file; remove it or give the folder that holds the files");
  if (!S_ISREG(st.st_mode))
    f.fail(-1, "is not a regular file (a device, FIFO or socket); data files must be plain files");
  f.disk_size = uint64_t(st.st_size);
  f.gz = f.fill(2) >= 2 && f.in[0] == 0x1f && f.in[1] == 0x8b;
  // Deflate's stored blocks add 5 bytes per 64 KiB of incompressible data and the gzip wrapper 18:
  // 1/1024 + 1 KiB is room to spare. Checked before a byte is inflated.
  const uint64_t max_disk = f.gz ? max_bytes + max_bytes / 1024 + 1024 : max_bytes;
  if (f.disk_size > max_disk)
    f.fail(-1, "is " + human_bytes(f.disk_size) + (f.gz ? " of gzip" : "") + ", more than " + limit +
                   "; is it the right file?");
  if (f.gz) {
    if (inflateInit2(&f.z, 15 + 16) != Z_OK)  // 15: largest window; +16: expect a gzip wrapper
      f.fail(-1, "zlib could not start (out of memory?)");
    f.z_live = true;
  }
}

DataFile::~DataFile() = default;

const std::string& DataFile::path() const { return impl_->path; }
bool DataFile::gzipped() const { return impl_->gz; }
uint64_t DataFile::disk_size() const { return impl_->disk_size; }
uint64_t DataFile::position() const { return impl_->produced; }

std::size_t DataFile::read(uint8_t* dst, std::size_t n) {
  Impl& f = *impl_;
  if (!f.gz) {
    const std::size_t got = f.read_plain(dst, n);
    f.produced += got;
    return got;
  }
  // One byte past the limit is enough to know it is exceeded: never inflate more than that.
  const uint64_t room = f.produced > f.max_bytes ? 0 : f.max_bytes + 1 - f.produced;
  const std::size_t want = std::size_t(std::min<uint64_t>(n, room));
  const std::size_t got = f.inflate_into(dst, want);
  f.produced += got;
  if (f.produced > f.max_bytes)
    f.fail(int64_t(f.max_bytes),
           "inflates to more than " + f.limit + "; is it the right file (or a gzip bomb)?");
  return got;
}

uint64_t DataFile::rest(uint64_t cap) {
  Impl& f = *impl_;
  if (!f.gz) return std::min(f.disk_size - std::min(f.disk_size, f.produced), cap + 1);
  std::vector<uint8_t> scratch(std::size_t(std::min<uint64_t>(cap + 1, 64 << 10)));
  uint64_t count = 0;
  while (count <= cap && !f.done) {
    const std::size_t got = f.inflate_into(
        scratch.data(), std::size_t(std::min<uint64_t>(scratch.size(), cap + 1 - count)));
    f.produced += got;
    count += got;
  }
  return count;
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

// Whether `p` exists. One that cannot be examined (a symbolic-link loop, no permission) is a
// DataError naming it: std::filesystem's own exception would reach the user as "unexpected error:
// filesystem error" without saying which data set it was.
bool exists_checked(const fs::path& p) {
  std::error_code ec;
  const fs::file_status st = fs::status(p, ec);
  if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
    throw DataError(p.string(), -1, "cannot be examined (" + ec.message() + "); fix or remove it");
  return fs::exists(st);
}

bool is_folder(const fs::path& p) {
  std::error_code ec;
  return exists_checked(p) && fs::is_directory(p, ec);
}

// The first of `names` that exists in `dir` (each also tried with .gz), for the error otherwise.
std::string find_file(const fs::path& dir, const std::vector<std::string>& names) {
  for (const std::string& name : names)
    for (const char* suffix : {"", ".gz"})
      if (exists_checked(dir / (name + suffix))) return (dir / (name + suffix)).string();
  throw DataError((dir / names[0]).string(), -1,
                  "not found (looked for " + names[0] + " and " + names[0] +
                      ".gz in this folder); check the data SPEC's DIR");
}

// Looks for `first` in dir or one of its usual sub-folders (what the archives unpack to).
fs::path find_dir_with(const fs::path& dir, const std::string& first,
                       const std::vector<std::string>& subdirs) {
  if (exists_checked(dir / first)) return dir;
  for (const std::string& sub : subdirs)
    if (exists_checked(dir / sub / first)) return dir / sub;
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
  if (!is_folder(dir))
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
  if (!is_folder(dir))
    throw DataError(dir.string(), -1, "is not a folder; folder:DIR needs one sub-folder per class");
  Dataset d;
  d.name = "folder";
  if (is_folder(dir / "train") && is_folder(dir / "test")) {
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
    throw UsageError("data set " + spec + ": holding out " + std::to_string(val_count) +
                     " of its " + std::to_string(d.train.n) +
                     " training images for validation leaves none to train on; lower the "
                     "validation fraction or add images");
  std::vector<int> val, train;
  split_indices(d.train.n, val_count, mix_seed(opts.seed, 0), val, train);
  d.val = capped(d.train.subset(val), opts.max_val, mix_seed(opts.seed, 3));
  d.train = capped(d.train.subset(train), opts.max_train, mix_seed(opts.seed, 2));
  d.test = capped(d.test, opts.max_test, mix_seed(opts.seed, 4));
  channel_stats(d.train, d.mean, d.std);
  return d;
}

}  // namespace evo
