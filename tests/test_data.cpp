// Tests of the data loaders: random files in each exact format read back pixel for pixel, broken
// and hostile files (bombs, sparse giants, lying headers, link loops) with their errors, the split,
// the statistics, the real Fashion-MNIST. Not augmentation.
#include <sys/resource.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

#include "evo/data.h"
#include "support.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

using namespace evo;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

int rand_int(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(test::rng());
}

Bytes random_bytes(std::size_t n, int lo = 0, int hi = 255) {
  Bytes b(n);
  for (uint8_t& x : b) x = uint8_t(rand_int(lo, hi));
  return b;
}

// A fresh folder under the system temp dir, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("evo_test_data_" + std::to_string(test::rng()()) + "_" +
                                        std::to_string(rand_int(0, 1 << 30)));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const Bytes& b) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(out.good());
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// gzip through zlib's gz* API (the loader inflates with the z_stream API: two separate paths).
void write_gz(const std::string& path, const Bytes& b) {
  fs::create_directories(fs::path(path).parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f);
  REQUIRE(gzwrite(f, b.data(), unsigned(b.size())) == int(b.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

void put_be32(Bytes& b, uint32_t x) {
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(uint8_t(x >> shift));
}

Bytes idx_images(int n, int h, int w, const Bytes& pixels) {
  Bytes b = {0, 0, 8, 3};
  put_be32(b, uint32_t(n));
  put_be32(b, uint32_t(h));
  put_be32(b, uint32_t(w));
  b.insert(b.end(), pixels.begin(), pixels.end());
  return b;
}

Bytes idx_labels(const Bytes& labels) {
  Bytes b = {0, 0, 8, 1};
  put_be32(b, uint32_t(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

std::vector<int32_t> as_labels(const Bytes& b) {
  return std::vector<int32_t>(b.begin(), b.end());
}

struct Written {
  int n, h, w, c;
  Bytes pixels;  // NHWC, what the loader must return
  Bytes labels;
};

Written random_images(int n, int h, int w, int c, int classes) {
  return {n,
          h,
          w,
          c,
          random_bytes(std::size_t(n) * h * w * c),
          random_bytes(std::size_t(n), 0, classes - 1)};
}

void check_equal(const ImageSet& got, const Written& want) {
  CHECK(got.n == want.n);
  CHECK(got.h == want.h);
  CHECK(got.w == want.w);
  CHECK(got.c == want.c);
  CHECK(got.pixels == want.pixels);
  CHECK(got.labels == as_labels(want.labels));
}

// Writes train and t10k IDX files (gzipped or not) into dir.
std::pair<Written, Written> write_idx_set(const TempDir& dir, bool gz, int h, int w) {
  const Written train = random_images(rand_int(20, 60), h, w, 1, 10);
  const Written test = random_images(rand_int(5, 20), h, w, 1, 10);
  const std::string ext = gz ? ".gz" : "";
  auto write = gz ? write_gz : write_bytes;
  write(dir / ("train-images-idx3-ubyte" + ext), idx_images(train.n, h, w, train.pixels));
  write(dir / ("train-labels-idx1-ubyte" + ext), idx_labels(train.labels));
  write(dir / ("t10k-images-idx3-ubyte" + ext), idx_images(test.n, h, w, test.pixels));
  write(dir / ("t10k-labels-idx1-ubyte" + ext), idx_labels(test.labels));
  return {train, test};
}

DataOptions no_split() {
  DataOptions o;
  o.val_fraction = 0;
  return o;
}

// For expect_data_error: the offset is not checked.
constexpr int64_t kAnyOffset = INT64_MIN;

// Runs `load` and checks it throws DataError naming `file` at `offset`, with `fragment` in it.
// Anything else (std::bad_alloc, a filesystem_error, no exception) fails the test.
template <typename F>
void expect_data_error(F&& load, const std::string& file, int64_t offset,
                       const std::string& fragment) {
  try {
    load();
    FAIL("no DataError for " << file);
  } catch (const DataError& e) {
    INFO(e.what());
    CHECK(e.file() == file);
    if (offset != kAnyOffset) CHECK(e.offset() == offset);
    const std::string what = e.what();
    CHECK(what.find(file) != std::string::npos);
    if (offset >= 0) CHECK(what.find("byte offset " + std::to_string(offset)) != std::string::npos);
    CHECK(what.find(fragment) != std::string::npos);
  }
}

// CIFAR records from NHWC images: the loader's transpose checked against this one.
Bytes cifar_records(const Written& set, const Bytes& coarse) {
  Bytes b;
  for (int i = 0; i < set.n; ++i) {
    if (!coarse.empty()) b.push_back(coarse[i]);
    b.push_back(set.labels[i]);
    for (int ch = 0; ch < 3; ++ch)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x)
          b.push_back(set.pixels[((std::size_t(i) * 32 + y) * 32 + x) * 3 + ch]);
  }
  return b;
}

std::string image_key(const ImageSet& s, int i) {
  return std::string(reinterpret_cast<const char*>(s.image(i)), std::size_t(s.image_size()));
}

}  // namespace

TEST_CASE("IDX files, raw and gzipped, load pixel for pixel", "[data]") {
  for (bool gz : {false, true}) {
    INFO("gzipped: " << gz);
    TempDir dir;
    const int h = rand_int(3, 12), w = rand_int(3, 12);
    const auto [train, test] = write_idx_set(dir, gz, h, w);
    const Dataset d = load_dataset("mnist:" + dir.path.string(), no_split());
    CHECK(d.name == "mnist");
    CHECK(d.classes == 10);
    check_equal(d.train, train);
    check_equal(d.test, test);
    CHECK(d.val.n == 0);
    const Dataset f = load_dataset("fashion-mnist:" + dir.path.string(), no_split());
    CHECK(f.class_names.at(9) == "Ankle boot");
    check_equal(f.train, train);
  }
}

TEST_CASE("broken IDX files name the file and the byte offset", "[data]") {
  TempDir dir;
  const int n = rand_int(5, 30), h = rand_int(2, 9), w = rand_int(2, 9);
  const Written set = random_images(n, h, w, 1, 10);
  const Bytes images = idx_images(n, h, w, set.pixels), labels = idx_labels(set.labels);
  const std::string ip = dir / "images", lp = dir / "labels";
  write_bytes(lp, labels);
  auto load = [&] { read_idx(ip, lp, 10); };

  struct Case {
    const char* what;
    Bytes bytes;
    int64_t offset;
    const char* fragment;
  };
  auto changed = [&](std::size_t at, uint8_t value) {
    Bytes b = images;
    b[at] = value;
    return b;
  };
  const std::size_t size = images.size();
  const std::vector<Case> cases = {
      {"bad magic", changed(0, 0x1f), 0, "bad IDX magic"},
      {"bad magic 2", changed(1, 0x08), 0, "bad IDX magic"},
      {"element type", changed(2, 0x0d), 2, "not unsigned byte"},
      {"wrong dims", changed(3, 2), 3, "declares 2 dimensions"},
      {"zero dimension", changed(11, 0), 8, "dimension 1 is 0"},
      {"absurd width", changed(13, 0x80), 12, "dimension 2 is"},
      {"truncated in the magic", Bytes(images.begin(), images.begin() + 3), 3, "magic"},
      {"truncated in the header", Bytes(images.begin(), images.begin() + 10), 10,
       "inside the IDX header"},
      {"truncated in the payload", Bytes(images.begin(), images.end() - 7), int64_t(size - 7),
       "truncated"},
      {"extra bytes",
       [&] {
         Bytes b = images;
         b.push_back(7), b.push_back(9);
         return b;
       }(),
       int64_t(size), "2 unexpected bytes"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    write_bytes(ip, c.bytes);
    expect_data_error(load, ip, c.offset, c.fragment);
  }

  // Labels: out of range, and a count that disagrees with the images.
  write_bytes(ip, images);
  const int bad = rand_int(0, n - 1);
  Bytes bad_labels = labels;
  bad_labels[8 + bad] = uint8_t(rand_int(10, 255));
  write_bytes(lp, bad_labels);
  expect_data_error(
      load, lp, 8 + bad,
      "label " + std::to_string(bad_labels[8 + bad]) + " of image " + std::to_string(bad));
  Bytes short_labels = set.labels;
  short_labels.pop_back();
  write_bytes(lp, idx_labels(short_labels));
  expect_data_error(load, lp, 4, "holds " + std::to_string(n - 1) + " labels");

  // gzip: cut short, damaged in the middle, and whole but holding a truncated IDX file.
  write_bytes(lp, labels);
  write_gz(ip, images);
  const Bytes gz = read_bytes(ip);
  write_bytes(ip, Bytes(gz.begin(), gz.begin() + std::ptrdiff_t(gz.size() / 2)));
  expect_data_error(load, ip, int64_t(gz.size() / 2), "gzip stream ends early");
  Bytes damaged = gz;
  damaged[gz.size() / 2] ^= 0x5a;
  damaged[gz.size() / 2 + 1] ^= 0xa5;
  write_bytes(ip, damaged);
  try {
    load();
    FAIL("no error for a damaged gzip file");
  } catch (const DataError& e) {
    INFO(e.what());
    CHECK(e.file() == ip);
    CHECK(e.offset() >= 0);
    CHECK(e.offset() <= int64_t(gz.size()));
    CHECK(std::string(e.what()).find("gzip") != std::string::npos);
  }
  write_gz(ip, Bytes(images.begin(), images.end() - 5));
  expect_data_error(load, ip, int64_t(size - 5), "uncompressed");
  expect_data_error([&] { read_idx(dir / "missing", lp, 10); }, dir / "missing", -1, "cannot open");
}

TEST_CASE("CIFAR-10 and CIFAR-100 binaries load pixel for pixel", "[data]") {
  SECTION("CIFAR-10, in the archive's sub-folder") {
    TempDir dir;
    Written train{0, 32, 32, 3, {}, {}};
    for (int b = 1; b <= 5; ++b) {
      const Written part = random_images(rand_int(1, 4), 32, 32, 3, 10);
      write_bytes(dir / ("cifar-10-batches-bin/data_batch_" + std::to_string(b) + ".bin"),
                  cifar_records(part, {}));
      train.n += part.n;
      train.pixels.insert(train.pixels.end(), part.pixels.begin(), part.pixels.end());
      train.labels.insert(train.labels.end(), part.labels.begin(), part.labels.end());
    }
    const Written test = random_images(rand_int(1, 5), 32, 32, 3, 10);
    write_bytes(dir / "cifar-10-batches-bin/test_batch.bin", cifar_records(test, {}));
    const Dataset d = load_dataset("cifar10:" + dir.path.string(), no_split());
    CHECK(d.classes == 10);
    CHECK(d.class_names[0] == "airplane");
    check_equal(d.train, train);
    check_equal(d.test, test);

    // A truncated batch and a label out of range.
    const std::string batch3 = dir / "cifar-10-batches-bin/data_batch_3.bin";
    const Bytes good = read_bytes(batch3);
    write_bytes(batch3, Bytes(good.begin(), good.end() - 5));
    expect_data_error([&] { load_dataset("cifar10:" + dir.path.string()); }, batch3,
                      int64_t(good.size() - 5),
                      "inside record " + std::to_string(good.size() / 3073 - 1));
    Bytes bad = good;
    const int r = rand_int(0, int(good.size() / 3073) - 1);
    bad[std::size_t(r) * 3073] = uint8_t(rand_int(10, 255));
    write_bytes(batch3, bad);
    expect_data_error([&] { load_dataset("cifar10:" + dir.path.string()); }, batch3,
                      int64_t(r) * 3073, "of record " + std::to_string(r));
  }
  SECTION("CIFAR-100 uses the fine labels") {
    TempDir dir;
    const Written train = random_images(rand_int(2, 9), 32, 32, 3, 100);
    const Written test = random_images(rand_int(2, 5), 32, 32, 3, 100);
    const Bytes train_coarse = random_bytes(std::size_t(train.n), 0, 19);
    write_bytes(dir / "train.bin", cifar_records(train, train_coarse));
    write_bytes(dir / "test.bin", cifar_records(test, random_bytes(std::size_t(test.n), 0, 19)));
    const Dataset d = load_dataset("cifar100:" + dir.path.string(), no_split());
    CHECK(d.classes == 100);
    CHECK(std::set<std::string>(d.class_names.begin(), d.class_names.end()).size() == 100);
    check_equal(d.train, train);
    check_equal(d.test, test);

    const int r = rand_int(0, train.n - 1);
    Bytes bad = cifar_records(train, train_coarse);
    bad[std::size_t(r) * 3074 + 1] = 100;
    write_bytes(dir / "train.bin", bad);
    expect_data_error([&] { load_dataset("cifar100:" + dir.path.string()); }, dir / "train.bin",
                      int64_t(r) * 3074 + 1, "label 100");
    bad = cifar_records(train, train_coarse);
    bad[std::size_t(r) * 3074] = 20;
    write_bytes(dir / "train.bin", bad);
    expect_data_error([&] { load_dataset("cifar100:" + dir.path.string()); }, dir / "train.bin",
                      int64_t(r) * 3074, "coarse label 20");
  }
}

TEST_CASE("a folder of PNGs: labels from sorted sub-folders, colour and size made consistent",
          "[data]") {
  TempDir dir;
  const int h = rand_int(4, 9), w = rand_int(4, 9);
  // Written in a scrambled order on purpose: labels follow the sorted names.
  const std::vector<std::string> classes = {"cow", "ant", "bee"};
  struct Img {
    std::string cls, path;
    int h, w, comp;
    Bytes pixels;
  };
  std::vector<Img> written;
  for (const std::string& cls : classes) {
    const int count = rand_int(2, 4);
    for (int i = 0; i < count; ++i) {
      // Grey, grey + alpha, RGB and RGBA, at the common size; one larger image in "cow".
      const int comp = rand_int(1, 4);
      const bool big = cls == "cow" && i == 0;
      Img img{cls,
              dir / (cls + "/img" + std::to_string(i) + ".png"),
              big ? 2 * h : h,
              big ? 2 * w : w,
              comp,
              {}};
      img.pixels = random_bytes(std::size_t(img.h) * img.w * comp);
      fs::create_directories(dir.path / cls);
      REQUIRE(
          stbi_write_png(img.path.c_str(), img.w, img.h, comp, img.pixels.data(), img.w * comp));
      written.push_back(img);
    }
  }
  write_bytes(dir / "bee/notes.txt", random_bytes(10));  // not an image: ignored
  // The first image (ant/img0.png) sets the size; make sure there is colour somewhere.
  const fs::path rgb = dir.path / "bee/zzz.png";
  Img extra{"bee", rgb.string(), h, w, 3, random_bytes(std::size_t(h) * w * 3)};
  REQUIRE(stbi_write_png(extra.path.c_str(), w, h, 3, extra.pixels.data(), w * 3));
  written.push_back(extra);
  std::sort(written.begin(), written.end(),
            [](const Img& a, const Img& b) { return a.path < b.path; });

  DataOptions opts = no_split();
  opts.folder_test_fraction = 0;
  opts.folder_resize = ResizeFilter::Nearest;
  const Dataset d = load_dataset("folder:" + dir.path.string(), opts);
  REQUIRE(d.class_names == std::vector<std::string>{"ant", "bee", "cow"});
  CHECK(d.classes == 3);
  REQUIRE(d.train.n == int(written.size()));
  CHECK(d.train.h == h);
  CHECK(d.train.w == w);
  CHECK(d.train.c == 3);
  CHECK(d.test.n == 0);
  for (int i = 0; i < d.train.n; ++i) {
    const Img& img = written[i];
    INFO(img.path << " comp " << img.comp);
    CHECK(d.train.labels[i] == (img.cls == "ant" ? 0 : img.cls == "bee" ? 1 : 2));
    Bytes want(std::size_t(h) * w * 3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        // Nearest: the big image is exactly twice the size, so pixel (2y, 2x).
        const int sy = y * img.h / h, sx = x * img.w / w;
        const uint8_t* p = img.pixels.data() + (std::size_t(sy) * img.w + sx) * img.comp;
        for (int ch = 0; ch < 3; ++ch)
          want[(std::size_t(y) * w + x) * 3 + ch] = img.comp <= 2 ? p[0] : p[ch];
      }
    CHECK(Bytes(d.train.image(i), d.train.image(i) + d.train.image_size()) == want);
  }

  // Bilinear halving averages each 2x2 block (within rounding); grey from RGB by luminance.
  opts.folder_resize = ResizeFilter::Bilinear;
  opts.folder_channels = 1;
  const Dataset g = load_dataset("folder:" + dir.path.string(), opts);
  CHECK(g.train.c == 1);
  for (int i = 0; i < g.train.n; ++i) {
    const Img& img = written[i];
    INFO(img.path << " comp " << img.comp);
    auto grey = [&](int y, int x) {
      const uint8_t* p = img.pixels.data() + (std::size_t(y) * img.w + x) * img.comp;
      return img.comp <= 2 ? double(p[0]) : 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    };
    double worst = 0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int f = img.h / h;  // 1, or 2 for the big image
        double want = 0;
        for (int dy = 0; dy < f; ++dy)
          for (int dx = 0; dx < f; ++dx) want += grey(f * y + dy, f * x + dx) / (f * f);
        worst = std::max(worst, std::fabs(g.train.image(i)[y * w + x] - want));
      }
    CHECK(worst <= 2.5);  // stb's integer luminance and two roundings for the big image
  }

  // A damaged PNG names its file; an empty class folder is an error too.
  const Bytes png = read_bytes(written[1].path);
  write_bytes(written[1].path, Bytes(png.begin(), png.begin() + std::ptrdiff_t(png.size() / 2)));
  expect_data_error([&] { load_dataset("folder:" + dir.path.string(), opts); }, written[1].path, -1,
                    "image");
  write_bytes(written[1].path, png);
  fs::create_directories(dir.path / "dog");
  expect_data_error([&] { load_dataset("folder:" + dir.path.string(), opts); },
                    (dir.path / "dog").string(), -1, "holds no .png");
}

TEST_CASE("a folder with train/ and test/ and a JPEG", "[data]") {
  TempDir dir;
  const int h = rand_int(8, 16), w = rand_int(8, 16);
  std::map<std::string, int> counts;
  for (const char* split : {"train", "test"})
    for (const char* cls : {"x", "y"}) {
      const int count = rand_int(1, 3);
      counts[std::string(split) + cls] = count;
      for (int i = 0; i < count; ++i) {
        const Bytes px = random_bytes(std::size_t(h) * w * 3);
        const std::string path =
            dir / (std::string(split) + "/" + cls + "/" + std::to_string(i) + ".png");
        fs::create_directories(fs::path(path).parent_path());
        REQUIRE(stbi_write_png(path.c_str(), w, h, 3, px.data(), w * 3));
      }
    }
  // A smooth JPEG (noise would not survive compression) of another size: resized to the PNGs'.
  Bytes smooth(std::size_t(2 * h) * (2 * w) * 3);
  const int base = rand_int(40, 200);
  for (int y = 0; y < 2 * h; ++y)
    for (int x = 0; x < 2 * w; ++x)
      for (int ch = 0; ch < 3; ++ch)
        smooth[(std::size_t(y) * 2 * w + x) * 3 + ch] = uint8_t(base + y + ch);
  REQUIRE(stbi_write_jpg((dir / "test/y/photo.jpg").c_str(), 2 * w, 2 * h, 3, smooth.data(), 100));

  const Dataset d = load_dataset("folder:" + dir.path.string(), no_split());
  CHECK(d.train.n == counts["trainx"] + counts["trainy"]);
  CHECK(d.test.n == counts["testx"] + counts["testy"] + 1);
  CHECK(d.test.h == h);
  CHECK(d.test.w == w);
  const int j = d.test.n - 1;  // photo.jpg sorts after 0.png, 1.png, ...
  CHECK(d.test.labels[j] == 1);
  double err = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      err += std::fabs(d.test.image(j)[(y * w + x) * 3] - (base + 2 * y + 0.5));
  CHECK(err / (h * w) < 4);

  fs::create_directories(dir.path / "test/z");
  REQUIRE(stbi_write_png((dir / "test/z/0.png").c_str(), w, h, 3, smooth.data(), w * 3));
  expect_data_error([&] { load_dataset("folder:" + dir.path.string()); },
                    (dir.path / "test/z").string(), -1, "not one of the training folder's classes");
}

TEST_CASE("the validation split is disjoint, sized, seeded and deterministic", "[data]") {
  TempDir dir;
  const int n = 200;
  const Written train = random_images(n, 6, 5, 1, 10);
  write_bytes(dir / "train-images-idx3-ubyte", idx_images(n, 6, 5, train.pixels));
  write_bytes(dir / "train-labels-idx1-ubyte", idx_labels(train.labels));
  const Written test = random_images(17, 6, 5, 1, 10);
  write_bytes(dir / "t10k-images-idx3-ubyte", idx_images(17, 6, 5, test.pixels));
  write_bytes(dir / "t10k-labels-idx1-ubyte", idx_labels(test.labels));
  std::map<std::string, int> original;  // image bytes -> label (random images are distinct)
  for (int i = 0; i < n; ++i)
    original[std::string(train.pixels.begin() + i * 30, train.pixels.begin() + (i + 1) * 30)] =
        train.labels[i];
  REQUIRE(original.size() == std::size_t(n));

  DataOptions opts;
  opts.seed = test::rng()();
  opts.val_fraction = std::uniform_real_distribution<double>(0.05, 0.5)(test::rng());
  const std::string spec = "mnist:" + dir.path.string();
  const Dataset a = load_dataset(spec, opts);
  const int val_n = int(std::llround(opts.val_fraction * n));
  CHECK(a.val.n == val_n);
  CHECK(a.train.n == n - val_n);
  check_equal(a.test, test);  // the test files are never touched by the split
  std::set<std::string> seen;
  for (const ImageSet* s : {&a.train, &a.val})
    for (int i = 0; i < s->n; ++i) {
      const std::string key = image_key(*s, i);
      REQUIRE(original.count(key));
      CHECK(original[key] == s->labels[i]);  // labels travel with their images
      CHECK(seen.insert(key).second);        // no image in both
    }
  CHECK(seen.size() == std::size_t(n));

  const Dataset again = load_dataset(spec, opts);
  CHECK(again.val.pixels == a.val.pixels);
  CHECK(again.train.pixels == a.train.pixels);
  DataOptions other = opts;
  other.seed = opts.seed + 1;
  CHECK(load_dataset(spec, other).val.pixels != a.val.pixels);

  // Caps take seeded subsets of each split.
  DataOptions capped = opts;
  capped.max_train = rand_int(1, 50);
  capped.max_val = 3;
  capped.max_test = 5;
  const Dataset c = load_dataset(spec, capped);
  CHECK(c.train.n == capped.max_train);
  CHECK(c.val.n == std::min(3, val_n));
  CHECK(c.test.n == 5);
  std::set<std::string> a_train;
  for (int i = 0; i < a.train.n; ++i) a_train.insert(image_key(a.train, i));
  for (int i = 0; i < c.train.n; ++i) CHECK(a_train.count(image_key(c.train, i)));

  // The paper's CIFAR split: 5,000 of 50,000.
  std::vector<int> val, rest;
  split_indices(50000, 5000, 7, val, rest);
  CHECK(val.size() == 5000);
  CHECK(rest.size() == 45000);
  std::vector<int> all = val;
  all.insert(all.end(), rest.begin(), rest.end());
  std::sort(all.begin(), all.end());
  std::vector<int> every(50000);
  std::iota(every.begin(), every.end(), 0);
  CHECK(all == every);
  // Pinned so a change of algorithm (and of every past run's split) cannot go unnoticed.
  split_indices(10, 3, 42, val, rest);
  CHECK(val == std::vector<int>({0, 4, 6}));
}

TEST_CASE("mean and std come from the training split only", "[data]") {
  TempDir dir;
  Written train = random_images(rand_int(30, 60), 32, 32, 3, 10);
  // Skew the channels so a mix-up between them shows.
  for (std::size_t i = 0; i < train.pixels.size(); i += 3)
    train.pixels[i] = uint8_t(train.pixels[i] / 4);
  const Written test = random_images(4, 32, 32, 3, 10);
  write_bytes(dir / "data_batch_1.bin", cifar_records(train, {}));
  write_bytes(dir / "test_batch.bin", cifar_records(test, {}));
  for (int b = 2; b <= 5; ++b) {  // one record each: an empty batch is an error (checked below)
    const Written one = random_images(1, 32, 32, 3, 10);
    write_bytes(dir / ("data_batch_" + std::to_string(b) + ".bin"), cifar_records(one, {}));
  }
  DataOptions opts;
  opts.seed = test::rng()();
  const Dataset d = load_dataset("cifar10:" + dir.path.string(), opts);
  REQUIRE(d.mean.size() == 3);
  REQUIRE(d.std.size() == 3);
  for (int ch = 0; ch < 3; ++ch) {
    double sum = 0, sq = 0;
    const double count = double(d.train.n) * 32 * 32;
    for (int i = 0; i < d.train.n; ++i)
      for (int p = 0; p < 32 * 32; ++p) sum += d.train.image(i)[p * 3 + ch];
    const double mean = sum / count;
    for (int i = 0; i < d.train.n; ++i)
      for (int p = 0; p < 32 * 32; ++p) sq += std::pow(d.train.image(i)[p * 3 + ch] - mean, 2);
    CHECK(d.mean[ch] == Approx(mean).epsilon(1e-6));
    CHECK(d.std[ch] == Approx(std::sqrt(sq / count)).epsilon(1e-5));
  }
  CHECK(d.mean[0] < d.mean[1] / 2);
  // An empty batch file is reported, not skipped.
  write_bytes(dir / "data_batch_4.bin", Bytes{});
  expect_data_error([&] { load_dataset("cifar10:" + dir.path.string()); }, dir / "data_batch_4.bin",
                    0, "empty");
}

TEST_CASE("data specs: unknown forms and missing folders are explained", "[data]") {
  CHECK_THROWS_WITH(load_dataset("imagenet:/data"),
                    Catch::Contains("\"imagenet:/data\"") && Catch::Contains("cifar100:DIR") &&
                        Catch::Contains("folder:DIR") && Catch::Contains("fashion-mnist"));
  CHECK_THROWS_AS(load_dataset("mnist"), UsageError);
  CHECK_THROWS_AS(load_dataset("cifar10:"), UsageError);
  CHECK_THROWS_WITH(load_dataset("cifar10:/nonexistent/evo"),
                    Catch::Contains("data_batch_1.bin") && Catch::Contains("cifar-10-batches-bin"));
  CHECK_THROWS_WITH(load_dataset("mnist:/nonexistent/evo"),
                    Catch::Contains("train-images-idx3-ubyte"));
  DataOptions bad;
  bad.val_fraction = 1.0;
  CHECK_THROWS_AS(load_dataset("mnist:/nonexistent/evo", bad), UsageError);
}

// ---- hostile input: every size is checked against the header and the limits before allocating --

namespace {

// A sparse file of `size` bytes starting with `head`: gigabytes that take no disk.
void write_sparse(const std::string& path, const Bytes& head, uint64_t size) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(head.data()), std::streamsize(head.size()));
  out.seekp(std::streamoff(size - 1));
  out.put('\0');
  REQUIRE(out.good());
  out.close();
  REQUIRE(fs::file_size(path) == size);
}

Bytes gzipped(const TempDir& dir, const Bytes& content) {
  const std::string tmp = dir / "gzipped.tmp";
  write_gz(tmp, content);
  Bytes b = read_bytes(tmp);
  fs::remove(tmp);
  return b;
}

// A gzip bomb: `head` (gzipped) then `mib` members of 1 MiB of zeros each, ~1 KB apiece on disk.
// Concatenated members are one valid gzip file (RFC 1952), inflating to head + mib MiB.
void write_gzip_bomb(const TempDir& dir, const std::string& path, const Bytes& head, int mib) {
  const Bytes first = gzipped(dir, head);
  const Bytes zeros = gzipped(dir, Bytes(std::size_t(1) << 20, 0));
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(first.data()), std::streamsize(first.size()));
  for (int i = 0; i < mib; ++i)
    out.write(reinterpret_cast<const char*>(zeros.data()), std::streamsize(zeros.size()));
  REQUIRE(out.good());
}

// The process's peak resident memory so far (Linux: KiB), to show a case allocated little.
int64_t peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss) / 1024;
}

// A BMP header for a w x h 24-bit image with no pixel data: 0x0 is a valid BMP to stb_image.
Bytes bmp_header(int32_t w, int32_t h) {
  Bytes b = {'B', 'M'};
  auto le32 = [&](uint32_t x) {
    for (int k = 0; k < 4; ++k) b.push_back(uint8_t(x >> (8 * k)));
  };
  auto le16 = [&](uint16_t x) { b.push_back(uint8_t(x)), b.push_back(uint8_t(x >> 8)); };
  le32(54), le32(0), le32(54);              // file size, reserved, pixel data offset
  le32(40), le32(uint32_t(w)), le32(uint32_t(h));  // BITMAPINFOHEADER
  le16(1), le16(24), le32(0), le32(0);      // planes, bits per pixel, no compression, data size
  le32(2835), le32(2835), le32(0), le32(0);  // 72 dpi, no palette
  return b;
}

// A PNG whose IHDR says w x h (CRCs correct), then IEND.
Bytes png_header(uint32_t w, uint32_t h) {
  Bytes b = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  auto chunk = [&](const char* type, const Bytes& data) {
    put_be32(b, uint32_t(data.size()));
    Bytes body(type, type + 4);
    body.insert(body.end(), data.begin(), data.end());
    b.insert(b.end(), body.begin(), body.end());
    put_be32(b, uint32_t(crc32(0, body.data(), uInt(body.size()))));
  };
  Bytes ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, deflate, no filter, no interlace
  chunk("IHDR", ihdr);
  chunk("IEND", {});
  return b;
}

// A real small JPEG whose frame header (SOF0) is patched to claim w x h.
Bytes jpeg_claiming(const TempDir& dir, int w, int h) {
  const std::string tmp = dir / "claim.tmp.jpg";
  const Bytes px = random_bytes(8 * 8 * 3);
  REQUIRE(stbi_write_jpg(tmp.c_str(), 8, 8, 3, px.data(), 90));
  Bytes b = read_bytes(tmp);
  fs::remove(tmp);
  for (std::size_t i = 0; i + 9 < b.size(); ++i)
    if (b[i] == 0xff && b[i + 1] == 0xc0) {  // SOF0: FF C0, length(2), precision, height, width
      b[i + 5] = uint8_t(h >> 8), b[i + 6] = uint8_t(h);
      b[i + 7] = uint8_t(w >> 8), b[i + 8] = uint8_t(w);
      return b;
    }
  FAIL("stbi_write_jpg wrote no SOF0 marker");
  return b;
}

// A folder data set with classes a and b, a few random PNGs each.
void write_png_folder(const TempDir& dir) {
  for (const char* cls : {"a", "b"})
    for (int i = 0; i < 3; ++i) {
      const std::string path = dir / (std::string(cls) + "/img" + std::to_string(i) + ".png");
      fs::create_directories(fs::path(path).parent_path());
      const Bytes px = random_bytes(6 * 5 * 3);
      REQUIRE(stbi_write_png(path.c_str(), 5, 6, 3, px.data(), 5 * 3));
    }
}

}  // namespace

TEST_CASE("hostile IDX and CIFAR files: directories, devices, sparse giants, headers over limits",
          "[data][hostile]") {
  TempDir dir;
  const int n = rand_int(3, 9);
  const Written set = random_images(n, 7, 6, 1, 10);
  write_bytes(dir / "train-labels-idx1-ubyte", idx_labels(set.labels));
  write_bytes(dir / "t10k-images-idx3-ubyte", idx_images(n, 7, 6, set.pixels));
  write_bytes(dir / "t10k-labels-idx1-ubyte", idx_labels(set.labels));
  const std::string images = dir / "train-images-idx3-ubyte";
  const std::string labels = dir / "train-labels-idx1-ubyte";

  // A directory where a data file should be: was a request for 2^63-1 bytes.
  fs::create_directories(images);
  expect_data_error([&] { load_dataset("mnist:" + dir.path.string()); }, images, -1,
                    "is a directory");
  fs::remove(images);
  // A device: never read (/dev/zero would never end).
  expect_data_error([&] { read_idx("/dev/zero", labels, 10); }, "/dev/zero", -1,
                    "not a regular file");

  // An 8 GiB sparse file: refused by its size before a byte is read, with a valid header or not.
  const uint64_t giant = uint64_t(8) << 30;
  write_sparse(images, idx_images(n, 7, 6, set.pixels), giant);
  expect_data_error([&] { read_idx(images, labels, 10); }, images, -1,
                    "more than the 1.0 GiB an IDX file may hold (evo::kMaxIdxBytes)");
  // Under the limit but longer than its header says: the header is checked first, nothing read.
  write_sparse(images, idx_images(n, 7, 6, set.pixels), uint64_t(900) << 20);
  const int64_t end = 16 + int64_t(n) * 42;
  expect_data_error([&] { read_idx(images, labels, 10); }, images, end,
                    std::to_string((uint64_t(900) << 20) - uint64_t(end)) + " unexpected bytes");

  // A header promising more than kMaxIdxBytes (2^20 images of 4096 x 4096: 16 TiB), raw and gzip.
  const Bytes huge_header = idx_images(1 << 20, 4096, 4096, {});
  write_bytes(images, huge_header);
  expect_data_error([&] { read_idx(images, labels, 10); }, images, 4, "evo::kMaxIdxBytes");
  write_gz(images, huge_header);
  expect_data_error([&] { read_idx(images, labels, 10); }, images, 4, "evo::kMaxIdxBytes");
  // Rows over kMaxImageSide.
  write_bytes(images, idx_images(1, 4097, 1, Bytes(4097)));
  expect_data_error([&] { read_idx(images, labels, 10); }, images, 8, "evo::kMaxImageSide");

  // CIFAR: a directory, an 8 GiB sparse batch, a size that is not whole records: all before
  // reading.
  TempDir cifar;
  for (int b = 1; b <= 5; ++b)
    write_bytes(cifar / ("data_batch_" + std::to_string(b) + ".bin"),
                cifar_records(random_images(2, 32, 32, 3, 10), {}));
  write_bytes(cifar / "test_batch.bin", cifar_records(random_images(2, 32, 32, 3, 10), {}));
  const std::string batch2 = cifar / "data_batch_2.bin";
  const std::string spec = "cifar10:" + cifar.path.string();
  fs::remove(batch2);
  fs::create_directories(batch2);
  expect_data_error([&] { load_dataset(spec); }, batch2, -1, "is a directory");
  fs::remove(batch2);
  write_sparse(batch2, {}, giant);
  expect_data_error([&] { load_dataset(spec); }, batch2, -1,
                    "more than the 307300000 bytes a CIFAR file may hold (evo::kMaxCifarRecords");
  write_sparse(batch2, {}, uint64_t(3073) * 50000 + 1);
  expect_data_error([&] { load_dataset(spec); }, batch2, int64_t(3073) * 50000 + 1,
                    "inside record 50000");
}

TEST_CASE("gzip: a lying trailer and a gzip bomb stop at the size the header promises",
          "[data][hostile]") {
  TempDir dir;
  const int n = rand_int(3, 9), h = 28, w = 28;
  const Written set = random_images(n, h, w, 1, 10);
  const Bytes images = idx_images(n, h, w, set.pixels);
  const std::string ip = dir / "images.gz", lp = dir / "labels";
  write_bytes(lp, idx_labels(set.labels));
  auto load = [&] { read_idx(ip, lp, 10); };

  // The trailer's length (ISIZE) claims 4 GiB - 1: once a 1.2 GB allocation, now a length error
  // when the stream is checked.
  write_gz(ip, images);
  Bytes lying = read_bytes(ip);
  for (std::size_t k = lying.size() - 4; k < lying.size(); ++k) lying[k] = 0xff;
  write_bytes(ip, lying);
  expect_data_error(load, ip, kAnyOffset, "gzip");
  // The same on a 32-byte file (an empty member): no header to read.
  Bytes tiny = gzipped(dir, {});
  REQUIRE(tiny.size() <= 32);
  for (std::size_t k = tiny.size() - 4; k < tiny.size(); ++k) tiny[k] = 0xff;
  write_bytes(ip, tiny);
  expect_data_error(load, ip, kAnyOffset, "gzip");

  // Bombs of ~4 MB that inflate to 4 GiB: they must stop after the header (or the data it
  // promises), long before memory grows. Was: the whole 4 GiB, then the header check.
  const int64_t rss_before = peak_rss_mib();
  write_gzip_bomb(dir, ip, {}, 4096);  // only zeros: the element type (byte 2) is 0x00
  CHECK(fs::file_size(ip) < (uint64_t(8) << 20));
  expect_data_error(load, ip, 2, "element type 0x00");
  write_gzip_bomb(dir, ip, images, 4096);  // a valid file, then 4 GiB more
  expect_data_error(load, ip, int64_t(images.size()), "more than 1 MiB of unexpected bytes");
  write_gzip_bomb(dir, ip, idx_images(1 << 20, 4096, 4096, {}), 4096);  // a header asking 16 TiB
  expect_data_error(load, ip, 4, "evo::kMaxIdxBytes");
  const int64_t rss_after = peak_rss_mib();
  INFO("peak resident memory " << rss_before << " MiB before the bombs, " << rss_after << " after");
  CHECK(rss_after - rss_before < 256);  // the bombs inflate to 4 GiB each

  // A CIFAR bomb has no header: it stops at kMaxCifarRecords records (307 MB), not 4 GiB.
  TempDir cifar;
  for (int b = 1; b <= 5; ++b)
    write_bytes(cifar / ("data_batch_" + std::to_string(b) + ".bin"),
                cifar_records(random_images(1, 32, 32, 3, 10), {}));
  write_bytes(cifar / "test_batch.bin", cifar_records(random_images(1, 32, 32, 3, 10), {}));
  const std::string batch = cifar / "data_batch_4.bin";
  write_gzip_bomb(cifar, batch, {}, 4096);
  expect_data_error([&] { load_dataset("cifar10:" + cifar.path.string()); }, batch,
                    int64_t(kMaxCifarRecords) * 3073, "inflates to more than the 307300000 bytes");
  // And a gzipped CIFAR batch with a lying trailer.
  write_gz(batch, cifar_records(random_images(3, 32, 32, 3, 10), {}));
  lying = read_bytes(batch);
  for (std::size_t k = lying.size() - 4; k < lying.size(); ++k) lying[k] = 0xff;
  write_bytes(batch, lying);
  expect_data_error([&] { load_dataset("cifar10:" + cifar.path.string()); }, batch, kAnyOffset,
                    "gzip");
}

TEST_CASE("hostile folder data sets: 0x0 images, giant headers, huge files, link loops",
          "[data][hostile]") {
  TempDir dir;
  write_png_folder(dir);
  DataOptions opts = no_split();
  opts.folder_test_fraction = 0;
  const std::string spec = "folder:" + dir.path.string();
  REQUIRE(load_dataset(spec, opts).train.n == 6);

  // A 0x0 BMP (stb_image accepts it; the resize then read before its empty buffer): first in
  // sorted order (it would set the size of all) and last.
  for (const char* name : {"a/000.bmp", "b/zzz.bmp"}) {
    INFO(name);
    write_bytes(dir / name, bmp_header(0, 0));
    expect_data_error([&] { load_dataset(spec, opts); }, dir / name, -1, "says 0x0 pixels");
    fs::remove(dir / name);
  }
  // A 0x0 PNG: stb_image refuses it; the error still names the file.
  write_bytes(dir / "b/empty.png", png_header(0, 0));
  expect_data_error([&] { load_dataset(spec, opts); }, dir / "b/empty.png", -1, "image");
  fs::remove(dir / "b/empty.png");

  // One JPEG claiming 65500 x 65500, sorted first: it would set the size of every image.
  write_bytes(dir / "a/0.jpg", jpeg_claiming(dir, 65500, 65500));
  expect_data_error([&] { load_dataset(spec, opts); }, dir / "a/0.jpg", -1,
                    "says 65500x65500 pixels; images must be 1 to 4096 pixels a side "
                    "(evo::kMaxImageSide)");
  fs::remove(dir / "a/0.jpg");
  // A width just over the limit in a PNG header too.
  write_bytes(dir / "b/wide.png", png_header(4097, 1));
  expect_data_error([&] { load_dataset(spec, opts); }, dir / "b/wide.png", -1, "4097x1");
  fs::remove(dir / "b/wide.png");

  // An 8 GiB sparse "image": refused by its size, never opened by stb.
  write_sparse(dir / "b/big.png", png_header(8, 8), uint64_t(8) << 30);
  expect_data_error([&] { load_dataset(spec, opts); }, dir / "b/big.png", -1,
                    "evo::kMaxImageFileBytes");
  fs::remove(dir / "b/big.png");

  // Symbolic-link loops, as an image and as a class: was "unexpected error: filesystem error".
  fs::create_symlink("loop.png", dir.path / "b/loop.png");
  expect_data_error([&] { load_dataset(spec, opts); }, dir / "b/loop.png", -1,
                    "cannot be examined");
  fs::remove(dir.path / "b/loop.png");
  fs::create_symlink("c", dir.path / "c");
  expect_data_error([&] { load_dataset(spec, opts); }, dir / "c", -1, "cannot be examined");
  fs::remove(dir.path / "c");
  // The data set's folder itself a loop.
  fs::create_symlink("self", dir.path / "self");
  expect_data_error([&] { load_dataset("folder:" + (dir / "self")); }, dir / "self", -1,
                    "cannot be examined");
  fs::remove(dir.path / "self");

  REQUIRE(load_dataset(spec, opts).train.n == 6);  // all removed: loads again

  // resize_image itself refuses a 0-pixel side instead of reading out of bounds.
  const Bytes px = random_bytes(12);
  CHECK_THROWS_AS(resize_image(px.data(), 0, 0, 3, 2, 2, ResizeFilter::Bilinear), Error);
  CHECK_THROWS_AS(resize_image(px.data(), 2, 2, 3, 0, 2, ResizeFilter::Nearest), Error);
  CHECK_THROWS_WITH(resize_image(px.data(), 2, 0, 3, 2, 2, ResizeFilter::Nearest),
                    Catch::Contains("at least 1"));
}

// A PNG of 6x5 pixels whose image-data chunk claims a gigabyte (the fuzzer's input, 97 bytes):
// stb_image used to reserve 2 GiB for it before finding the file too short. Its chunks are now
// checked against the file's size first: a DataError naming the file, the chunk and its offset.
TEST_CASE("a PNG chunk longer than its file is refused before decoding", "[data][hostile]") {
  TempDir dir;
  const Bytes png = {
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
      0x52, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x05, 0x08, 0x00, 0x00, 0x00, 0x00, 0x43,
      0x33, 0xc2, 0x3a, 0x40, 0x00, 0x00, 0x28, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60,
      0xd0, 0x08, 0xa8, 0x58, 0x30, 0x82, 0x81, 0xcb, 0x28, 0x21, 0x69, 0xd5, 0x25, 0x06, 0x11};
  const std::string path = dir / "set/a/x.png";
  write_bytes(path, png);
  std::vector<std::string> classes;
  DataOptions opts;
  try {
    read_image_folder(dir / "set", classes, opts);
    FAIL("no error");
  } catch (const DataError& e) {
    CHECK(e.file() == path);
    CHECK(e.reason().find("chunk 'IDAT' at byte 33 claims 1073741864 bytes") != std::string::npos);
  }
}

TEST_CASE("loader messages about a data set's size name the data set", "[data][hostile]") {
  TempDir dir;
  fs::create_directories(dir.path / "only");
  const Bytes px = random_bytes(4 * 4 * 3);
  REQUIRE(stbi_write_png((dir / "only/one.png").c_str(), 4, 4, 3, px.data(), 4 * 3));
  DataOptions opts;
  opts.val_fraction = 0.5;
  opts.folder_test_fraction = 0;
  const std::string spec = "folder:" + dir.path.string();
  CHECK_THROWS_AS(load_dataset(spec, opts), UsageError);
  CHECK_THROWS_WITH(load_dataset(spec, opts),
                    Catch::Contains(spec) && Catch::Contains("of its 1 training images"));
}

TEST_CASE("the real Fashion-MNIST", "[data][fashion-mnist]") {
  if (!test::have_fashion_mnist()) {
    WARN("skipped: " << kFashionMnistDefaultDir
                     << " is missing (apt-get install dataset-fashion-mnist)");
    return;
  }
  const Dataset d = load_dataset("fashion-mnist");
  CHECK(d.name == "fashion-mnist");
  CHECK(d.classes == 10);
  CHECK(d.train.n + d.val.n == 60000);
  CHECK(d.val.n == 6000);
  CHECK(d.test.n == 10000);
  for (const ImageSet* s : {&d.train, &d.val, &d.test}) {
    CHECK(s->h == 28);
    CHECK(s->w == 28);
    CHECK(s->c == 1);
    CHECK(s->pixels.size() == std::size_t(s->n) * 784);
  }
  std::vector<int> per_class(10, 0);
  int out_of_range = 0;
  for (const ImageSet* s : {&d.train, &d.val, &d.test})
    for (int32_t label : s->labels) {
      if (label < 0 || label >= 10)
        ++out_of_range;
      else
        ++per_class[label];
    }
  CHECK(out_of_range == 0);
  for (int k = 0; k < 10; ++k) CHECK(per_class[k] == 7000);  // 6,000 train + 1,000 test each
  // Fashion-MNIST's published statistics: mean about 72.9 (0.286 x 255), std about 90.0.
  CHECK(d.mean[0] == Approx(72.9).margin(1.5));
  CHECK(d.std[0] == Approx(90.0).margin(1.5));
  // Real images, not blanks: most have many non-zero pixels.
  int blank = 0;
  for (int i = 0; i < d.test.n; ++i)
    blank += std::count(d.test.image(i), d.test.image(i) + 784, 0) > 700;
  CHECK(blank < 10);
}
