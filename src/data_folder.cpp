// A folder of images, one sub-folder per class, decoded by stb_image and brought to one size and
// channel count. Not a general image library: PNG, JPEG and BMP in, uint8 NHWC out.
//
// This file holds the one STB_IMAGE_IMPLEMENTATION of the program.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <memory>

#include "evo/data.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace evo {

namespace fs = std::filesystem;

std::vector<uint8_t> resize_image(const uint8_t* src, int h, int w, int c, int out_h, int out_w,
                                  ResizeFilter filter) {
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

std::vector<fs::path> sorted_entries(const fs::path& dir, bool want_dirs) {
  std::vector<fs::path> out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    if (hidden(e.path())) continue;
    if (want_dirs ? e.is_directory() : (e.is_regular_file() && is_image_file(e.path())))
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown reason";
}

}  // namespace

ImageSet read_image_folder(const std::string& dir, std::vector<std::string>& class_names,
                           const DataOptions& opts) {
  if (!fs::is_directory(dir))
    throw DataError(dir, -1, "is not a folder; it should hold one sub-folder per class");
  if (opts.folder_channels != 0 && opts.folder_channels != 1 && opts.folder_channels != 3)
    throw UsageError("folder channels must be 0 (automatic), 1 or 3, not " +
                     std::to_string(opts.folder_channels));
  if (opts.folder_height < 0 || opts.folder_width < 0 || opts.folder_height > 4096 ||
      opts.folder_width > 4096)
    throw UsageError("folder image size must be 0 (the first image's) or 1 to 4096 per side");

  // Labels: the sub-folders in sorted order, or the given list for a test folder.
  const bool fixed_classes = !class_names.empty();
  std::vector<std::pair<fs::path, int>> files;  // image, label
  const std::vector<fs::path> subdirs = sorted_entries(dir, true);
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
    const std::vector<fs::path> images = sorted_entries(sub, false);
    if (images.empty())
      throw DataError(sub.string(), -1, "holds no .png, .jpg, .jpeg or .bmp images");
    for (const fs::path& p : images) files.emplace_back(p, label);
  }

  // One size and channel count for all: given, or the first image's size and colour when any
  // image has it (headers only, so this pass is cheap).
  int out_h = opts.folder_height, out_w = opts.folder_width, out_c = opts.folder_channels;
  bool any_colour = false;
  for (std::size_t i = 0; i < files.size(); ++i) {
    int w, h, comp;
    if (!stbi_info(files[i].first.string().c_str(), &w, &h, &comp))
      throw DataError(files[i].first.string(), -1, "not a readable image: " + stb_reason());
    if (i == 0 && out_h == 0) out_h = h;
    if (i == 0 && out_w == 0) out_w = w;
    any_colour |= comp >= 3;
  }
  if (out_c == 0) out_c = any_colour ? 3 : 1;

  ImageSet s;
  s.n = int(files.size());
  s.h = out_h, s.w = out_w, s.c = out_c;
  s.pixels.resize(std::size_t(s.n) * s.image_size());
  s.labels.resize(files.size());
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::string path = files[i].first.string();
    int w, h, comp;
    // stb converts to out_c channels: grey is replicated to RGB, RGB averaged to grey, alpha
    // dropped.
    const std::unique_ptr<uint8_t, void (*)(void*)> img(
        stbi_load(path.c_str(), &w, &h, &comp, out_c), stbi_image_free);
    if (!img) throw DataError(path, -1, "cannot decode the image: " + stb_reason());
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
