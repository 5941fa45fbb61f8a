// The IDX format of MNIST and Fashion-MNIST (gzipped or not): header checks and the pixel copy.
// Not the file discovery or the split (data.cpp).
//
// IDX: bytes 0-1 zero, byte 2 the element type (0x08 = unsigned byte), byte 3 the number of
// dimensions; then each dimension as a big-endian uint32; then the elements, row-major.
#include <algorithm>
#include <cstdio>

#include "evo/data.h"

namespace evo {

namespace {

struct IdxHeader {
  std::vector<int64_t> dims;
  std::size_t data_offset = 0;
};

std::string hex(uint32_t x, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*x", digits, x);
  return buf;
}

// `where` says whose offsets these are, for gzipped files (the offsets are into the inflated data).
IdxHeader read_header(const std::string& path, const std::vector<uint8_t>& b, int want_dims,
                      const char* what, const std::string& where) {
  auto truncated = [&](const std::string& inside) {
    throw DataError(path, int64_t(b.size()),
                    "the file ends" + where + " inside the IDX header (" + inside +
                        "); it is truncated, download it again");
  };
  if (b.size() < 4) truncated("the 4-byte magic number");
  const uint32_t magic = uint32_t(b[0]) << 24 | b[1] << 16 | b[2] << 8 | b[3];
  if (b[0] != 0 || b[1] != 0)
    throw DataError(path, 0,
                    "bad IDX magic number " + hex(magic, 8) + "; an IDX " + what +
                        " file starts with " + hex(0x800u | unsigned(want_dims), 8) +
                        " (is this the right file, or a gzip file with a damaged header?)");
  if (b[2] != 0x08)
    throw DataError(path, 2, "element type " + hex(b[2], 2) + " is not unsigned byte (0x08)");
  if (b[3] != want_dims)
    throw DataError(path, 3,
                    "the header declares " + std::to_string(b[3]) + " dimensions; an IDX " + what +
                        " file has " + std::to_string(want_dims) + " (is this the " + what +
                        " file?)");
  IdxHeader h;
  h.data_offset = 4 + 4 * std::size_t(want_dims);
  if (b.size() < h.data_offset) truncated("the dimensions");
  for (int k = 0; k < want_dims; ++k) {
    const uint8_t* p = b.data() + 4 + 4 * k;
    const int64_t dim = int64_t(uint32_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3]);
    // Images are at most 4096 on a side; no data set holds 2^28 images in one file.
    const int64_t limit = k == 0 ? int64_t(1) << 28 : 4096;
    if (dim < 1 || dim > limit)
      throw DataError(path, int64_t(4 + 4 * k),
                      "dimension " + std::to_string(k) + " is " + std::to_string(dim) +
                          "; it must be 1 to " + std::to_string(limit));
    h.dims.push_back(dim);
  }
  int64_t payload = 1;
  for (int64_t d : h.dims) payload *= d;
  const int64_t end = int64_t(h.data_offset) + payload;
  if (int64_t(b.size()) < end)
    throw DataError(path, int64_t(b.size()),
                    "the file ends" + where + " but its header promises " +
                        std::to_string(payload) + " bytes of data up to offset " +
                        std::to_string(end) + "; it is truncated, download it again");
  if (int64_t(b.size()) > end)
    throw DataError(path, end,
                    std::to_string(int64_t(b.size()) - end) + " unexpected bytes after the " +
                        what + " data" + where + "; the header and the contents disagree");
  return h;
}

}  // namespace

ImageSet read_idx(const std::string& images_path, const std::string& labels_path, int classes) {
  bool gz = false;
  const std::vector<uint8_t> images = read_file_bytes(images_path, &gz);
  const IdxHeader ih =
      read_header(images_path, images, 3, "image", gz ? " (offsets of the uncompressed data)" : "");
  const std::vector<uint8_t> labels = read_file_bytes(labels_path, &gz);
  const IdxHeader lh =
      read_header(labels_path, labels, 1, "label", gz ? " (offsets of the uncompressed data)" : "");
  if (lh.dims[0] != ih.dims[0])
    throw DataError(labels_path, 4,
                    "holds " + std::to_string(lh.dims[0]) + " labels but " + images_path +
                        " holds " + std::to_string(ih.dims[0]) + " images; use matching files");

  ImageSet s;
  s.n = int(ih.dims[0]);
  s.h = int(ih.dims[1]);
  s.w = int(ih.dims[2]);
  s.c = 1;  // IDX images are grayscale: HW is already NHWC with C = 1
  s.pixels.assign(images.begin() + std::ptrdiff_t(ih.data_offset), images.end());
  s.labels.resize(std::size_t(s.n));
  for (int i = 0; i < s.n; ++i) {
    const uint8_t label = labels[lh.data_offset + std::size_t(i)];
    if (label >= classes)
      throw DataError(labels_path, int64_t(lh.data_offset) + i,
                      "label " + std::to_string(label) + " of image " + std::to_string(i) +
                          " is not a class (0 to " + std::to_string(classes - 1) + ")");
    s.labels[i] = label;
  }
  return s;
}

}  // namespace evo
