// A folder of images, one sub-folder per class: every header checked against the limits in data.h,
// then decoded by stb_image and brought to one size and channel count. Not a general image
// library: PNG, JPEG and BMP in, uint8 NHWC out (stb_image decodes: src/stb_image.cpp).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <memory>

#include "evo/data.h"
#include "evo/io.h"

#include <stb/stb_image.h>

namespace evo {

namespace fs = std::filesystem;

std::vector<uint8_t> resize_image(const uint8_t* src, int h, int w, int c, int out_h, int out_w,
                                  ResizeFilter filter) {
  // A 0-pixel side would index the empty source (clamp(s, 0, -1) reads before it).
  if (h < 1 || w < 1 || c < 1 || out_h < 1 || out_w < 1)
    throw Error("resize_image: every size must be at least 1, not " + std::to_string(h) + "x" +
                std::to_string(w) + "x" + std::to_string(c) + " to " + std::to_string(out_h) + "x" +
                std::to_string(out_w) + "; check the image's size before resizing it");
  std::vector<uint8_t> out(std::size_t(out_h) * out_w * c);
  if (filter == ResizeFilter::Nearest) {
    // The same rule as the ops' nearest resize: out[i] = in[floor(i * H / OH)].
    for (int y = 0; y < out_h; ++y) {
      const int sy = int(int64_t(y) * h / out_h);
      for (int x = 0; x < out_w; ++x) {
        const int sx = int(int64_t(x) * w / out_w);
        std::copy_n(src + (std::size_t(sy) * w + sx) * c, c,
                    out.data() + (std::size_t(y) * out_w + x) * c);
      }
    }
    return out;
  }
  // Bilinear with pixel centres aligned (half-pixel offsets), edges clamped: a downscale by 2
  // averages 2x2 blocks, an upscale interpolates between neighbours.
  auto source = [](int i, int in, int outn, int& i0, int& i1, float& t) {
    const float s =
        std::clamp((float(i) + 0.5f) * float(in) / float(outn) - 0.5f, 0.f, float(in - 1));
    i0 = int(s);
    i1 = std::min(i0 + 1, in - 1);
    t = s - float(i0);
  };
  for (int y = 0; y < out_h; ++y) {
    int y0, y1;
    float ty;
    source(y, h, out_h, y0, y1, ty);
    for (int x = 0; x < out_w; ++x) {
      int x0, x1;
      float tx;
      source(x, w, out_w, x0, x1, tx);
      for (int ch = 0; ch < c; ++ch) {
        auto at = [&](int yy, int xx) { return float(src[(std::size_t(yy) * w + xx) * c + ch]); };
        const float top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * tx;
        const float bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * tx;
        const float v = top + (bottom - top) * ty;
        out[(std::size_t(y) * out_w + x) * c + ch] = uint8_t(std::clamp(std::lround(v), 0l, 255l));
      }
    }
  }
  return out;
}

namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

bool hidden(const fs::path& p) {
  return p.filename().string().starts_with(".");
}

// The class folders (want_dirs) or image files of `dir`, sorted. An entry that cannot be examined
// (a symbolic-link loop, no permission, a link to nothing) is a DataError naming it, not skipped.
// `count` is the images found so far, for kMaxFolderImages: the listing stops there.
std::vector<fs::path> sorted_entries(const fs::path& dir, bool want_dirs, std::size_t& count) {
  std::vector<fs::path> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw DataError(dir.string(), -1, "cannot list the folder (" + ec.message() + ")");
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) throw DataError(dir.string(), -1, "cannot list the folder (" + ec.message() + ")");
    const fs::path& p = it->path();
    if (hidden(p)) continue;
    const fs::file_status st = it->status(ec);  // follows links, as the image reader will
    if (ec)
      throw DataError(p.string(), -1,
                      "cannot be examined (" + ec.message() +
                          "); fix the link or remove the entry from the data set");
    const bool take = want_dirs ? fs::is_directory(st)
                                : fs::is_regular_file(st) && is_image_file(p);
    if (!take) continue;
    if (!want_dirs && ++count > std::size_t(kMaxFolderImages))
      throw DataError(dir.string(), -1,
                      "brings the data set over " + std::to_string(kMaxFolderImages) +
                          " images, the most a folder data set may hold "
                          "(evo::kMaxFolderImages); use a subset");
    out.push_back(p);
  }
  if (ec) throw DataError(dir.string(), -1, "cannot list the folder (" + ec.message() + ")");
  std::sort(out.begin(), out.end());
  return out;
}

// stb_image reserves a PNG's image data by the lengths its chunks claim before it reads them: a
// 98-byte file whose chunk claimed a gigabyte made it allocate 2 GiB (found by
// tests/fuzz/fuzz_data.cpp). Every chunk must lie inside the file, so what stb reserves stays
// within twice the file's size (at most kMaxImageFileBytes). Other formats: stb decides.
void check_png_chunks(const std::string& path, const std::string& bytes) {
  static const char kSignature[8] = {'\x89', 'P', 'N', 'G', '\r', '\n', '\x1a', '\n'};
  if (bytes.size() < 8 || bytes.compare(0, 8, kSignature, 8) != 0) return;
  std::size_t at = 8;
  while (at + 8 <= bytes.size()) {
    uint32_t len = 0;
    for (int k = 0; k < 4; ++k) len = len << 8 | uint8_t(bytes[at + std::size_t(k)]);
    std::string type = bytes.substr(at + 4, 4);
    for (char& ch : type)
      if (!std::isalpha(static_cast<unsigned char>(ch))) ch = '?';
    if (uint64_t(len) + 12 > bytes.size() - at)
      throw DataError(path, -1,
                      "is a damaged PNG image: its chunk '" + type + "' at byte " +
                          std::to_string(at) + " claims " + std::to_string(len) +
                          " bytes, more than the file holds");
    at += 12 + std::size_t(len);
    if (type == "IEND") return;
  }
}

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown reason";
}

}  // namespace

ImageSet read_image_folder(const std::string& dir, std::vector<std::string>& class_names,
                           const DataOptions& opts) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw DataError(dir, -1,
                    "is not a folder" + (ec ? " (" + ec.message() + ")" : std::string()) +
                        "; it should hold one sub-folder per class");
  if (opts.folder_channels != 0 && opts.folder_channels != 1 && opts.folder_channels != 3)
    throw UsageError("folder channels must be 0 (automatic), 1 or 3, not " +
                     std::to_string(opts.folder_channels));
  if (opts.folder_height < 0 || opts.folder_width < 0 || opts.folder_height > kMaxImageSide ||
      opts.folder_width > kMaxImageSide)
    throw UsageError("folder image size must be 0 (the first image's) or 1 to " +
                     std::to_string(kMaxImageSide) + " per side");

  // Labels: the sub-folders in sorted order, or the given list for a test folder.
  const bool fixed_classes = !class_names.empty();
  std::vector<std::pair<fs::path, int>> files;  // image, label
  std::size_t count = 0;
  const std::vector<fs::path> subdirs = sorted_entries(dir, true, count);
  if (subdirs.empty())
    throw DataError(dir, -1,
                    "has no sub-folders; put each class's images in a sub-folder "
                    "named after the class");
  for (const fs::path& sub : subdirs) {
    const std::string name = sub.filename().string();
    int label;
    if (fixed_classes) {
      const auto it = std::find(class_names.begin(), class_names.end(), name);
      if (it == class_names.end())
        throw DataError(sub.string(), -1, "is not one of the training folder's classes");
      label = int(it - class_names.begin());
    } else {
      label = int(class_names.size());
      class_names.push_back(name);
    }
    const std::vector<fs::path> images = sorted_entries(sub, false, count);
    if (images.empty())
      throw DataError(sub.string(), -1, "holds no .png, .jpg, .jpeg or .bmp images");
    for (const fs::path& p : images) files.emplace_back(p, label);
  }

  // Every header first (cheap: stb reads a few bytes): sizes are checked before any decoding, and
  // the set takes the given size, or the first image's, and colour when any image has it.
  std::vector<std::pair<int, int>> sizes(files.size());  // height, width from each header
  int out_h = opts.folder_height, out_w = opts.folder_width, out_c = opts.folder_channels;
  bool any_colour = false;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::string path = files[i].first.string();
    const uintmax_t bytes = fs::file_size(files[i].first, ec);
    if (ec) throw DataError(path, -1, "cannot be examined (" + ec.message() + ")");
    if (bytes > kMaxImageFileBytes)
      throw DataError(path, -1,
                      "is " + std::to_string(bytes >> 20) + " MiB, more than the 128 MiB an image "
                      "file may have (evo::kMaxImageFileBytes); shrink the image or remove it");
    int w, h, comp;
    if (!stbi_info(path.c_str(), &w, &h, &comp))
      throw DataError(path, -1, "not a readable image: " + stb_reason());
    if (w < 1 || h < 1 || w > kMaxImageSide || h > kMaxImageSide)
      throw DataError(path, -1,
                      "its header says " + std::to_string(w) + "x" + std::to_string(h) +
                          " pixels; images must be 1 to " + std::to_string(kMaxImageSide) +
                          " pixels a side (evo::kMaxImageSide): resize or remove it");
    sizes[i] = {h, w};
    if (i == 0 && out_h == 0) out_h = h;
    if (i == 0 && out_w == 0) out_w = w;
    any_colour |= comp >= 3;
  }
  if (out_c == 0) out_c = any_colour ? 3 : 1;
  // At most 2^22 images x 4096 x 4096 x 3 < 2^48: no overflow.
  const uint64_t total =
      uint64_t(files.size()) * uint64_t(out_h) * uint64_t(out_w) * uint64_t(out_c);
  if (total > kMaxFolderBytes)
    throw DataError(dir, -1,
                    std::to_string(files.size()) + " images of " + std::to_string(out_h) + "x" +
                        std::to_string(out_w) + "x" + std::to_string(out_c) + " are " +
                        std::to_string(total) + " bytes of pixels, more than the 4 GiB a folder "
                        "data set may take (evo::kMaxFolderBytes); give a smaller size or use a "
                        "subset");

  ImageSet s;
  s.n = int(files.size());  // at most kMaxFolderImages
  s.h = out_h, s.w = out_w, s.c = out_c;
  s.pixels.resize(std::size_t(total));
  s.labels.resize(files.size());
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::string path = files[i].first.string();
    int w, h, comp;
    // stb converts to out_c channels: grey is replicated to RGB, RGB averaged to grey, alpha
    // dropped.
    // Decoded from memory: read with its bound, and its PNG chunks checked against its size.
    std::string bytes;
    try {
      bytes = read_file_limited(path, kMaxImageFileBytes, "image");
    } catch (const DataError&) {
      throw;
    } catch (const Error& e) {
      throw DataError(path, -1, e.what());
    }
    check_png_chunks(path, bytes);
    const std::unique_ptr<uint8_t, void (*)(void*)> img(
        stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), int(bytes.size()),
                              &w, &h, &comp, out_c),
        stbi_image_free);
    if (!img) throw DataError(path, -1, "cannot decode the image: " + stb_reason());
    // The header was checked; a file replaced since then is not decoded past that check.
    if (h != sizes[i].first || w != sizes[i].second)
      throw DataError(path, -1,
                      "decodes to " + std::to_string(w) + "x" + std::to_string(h) +
                          " pixels but its header said " + std::to_string(sizes[i].second) + "x" +
                          std::to_string(sizes[i].first) + "; did it change while evo read it?");
    uint8_t* dst = s.pixels.data() + i * std::size_t(s.image_size());
    if (h == out_h && w == out_w) {
      std::copy_n(img.get(), std::size_t(s.image_size()), dst);
    } else {
      const std::vector<uint8_t> r =
          resize_image(img.get(), h, w, out_c, out_h, out_w, opts.folder_resize);
      std::copy(r.begin(), r.end(), dst);
    }
    s.labels[i] = files[i].second;
  }
  return s;
}

}  // namespace evo
