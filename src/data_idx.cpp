// The IDX format of MNIST and Fashion-MNIST (gzipped or not): header checks, then the data read
// into exactly the size the header promises. Not the file discovery or the split (data.cpp).
//
// IDX: bytes 0-1 zero, byte 2 the element type (0x08 = unsigned byte), byte 3 the number of
// dimensions; then each dimension as a big-endian uint32; then the elements, row-major.
#include <algorithm>
#include <cstdio>

#include "evo/data.h"

namespace evo {

namespace {

// Bytes after the promised data that are counted for the error message. A gzipped file is inflated
// that far at most (64 KiB of scratch at a time): a bomb behind a valid header stops there.
constexpr uint64_t kExtraCountCap = uint64_t(1) << 20;  // 1 MiB

std::string hex(uint32_t x, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*x", digits, x);
  return buf;
}

// Reads one IDX file of `want_dims` dimensions: its header, checked against the limits, then its
// data into `data`, whose size is what the header promises. Returns the dimensions.
std::vector<int64_t> read_idx_file(const std::string& path, int want_dims, const char* what,
                                   std::vector<uint8_t>& data) {
  DataFile f(path, kMaxIdxBytes, "the 1.0 GiB an IDX file may hold (evo::kMaxIdxBytes)");
  // Offsets are of the uncompressed data in a gzipped file: say so where it matters.
  const std::string where = f.gzipped() ? " (offsets of the uncompressed data)" : "";
  auto truncated = [&](uint64_t at, const std::string& inside) {
    throw DataError(path, int64_t(at),
                    "the file ends" + where + " inside the IDX header (" + inside +
                        "); it is truncated, download it again");
  };
  uint8_t b[16];
  const std::size_t header = 4 + 4 * std::size_t(want_dims);
  std::size_t got = f.read(b, 4);
  if (got < 4) truncated(got, "the 4-byte magic number");
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
  got += f.read(b + 4, header - 4);
  if (got < header) truncated(got, "the dimensions");
  std::vector<int64_t> dims;
  int64_t payload = 1;
  for (int k = 0; k < want_dims; ++k) {
    const uint8_t* p = b + 4 + 4 * k;
    const int64_t dim = int64_t(uint32_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3]);
    // The count is bounded by the file limit below; rows and columns by the image limit.
    const int64_t limit = k == 0 ? int64_t(kMaxIdxBytes) : kMaxImageSide;
    if (dim < 1 || dim > limit)
      throw DataError(path, int64_t(4 + 4 * k),
                      "dimension " + std::to_string(k) + " is " + std::to_string(dim) +
                          "; it must be 1 to " + std::to_string(limit) +
                          (k == 0 ? "" : " (evo::kMaxImageSide)"));
    dims.push_back(dim);
    payload *= dim;  // at most 2^30 * 4096 * 4096 = 2^54: no overflow
  }
  const int64_t end = int64_t(header) + payload;
  if (uint64_t(end) > kMaxIdxBytes)
    throw DataError(path, 4,
                    "the header promises " + std::to_string(payload) +
                        " bytes of data, more than the 1.0 GiB an IDX file may hold "
                        "(evo::kMaxIdxBytes); is it the right file?");
  // A plain file's size is known: check it before allocating or reading the data.
  if (!f.gzipped() && f.disk_size() < uint64_t(end))
    throw DataError(path, int64_t(f.disk_size()),
                    "the file ends but its header promises " + std::to_string(payload) +
                        " bytes of data up to offset " + std::to_string(end) +
                        "; it is truncated, download it again");
  if (!f.gzipped() && f.disk_size() > uint64_t(end))
    throw DataError(path, end,
                    std::to_string(f.disk_size() - uint64_t(end)) + " unexpected bytes after the " +
                        what + " data; the header and the contents disagree");
  data.resize(std::size_t(payload));
  got = f.read(data.data(), data.size());
  if (got < data.size())
    throw DataError(path, int64_t(header + got),
                    "the file ends" + where + " but its header promises " +
                        std::to_string(payload) + " bytes of data up to offset " +
                        std::to_string(end) + "; it is truncated, download it again");
  // For a gzip file this also checks the stream's CRC and length: after it, the data is trusted.
  const uint64_t extra = f.rest(kExtraCountCap);
  if (extra > 0)
    throw DataError(path, end,
                    (extra > kExtraCountCap ? "more than 1 MiB of" : std::to_string(extra)) +
                        " unexpected bytes after the " + what + " data" + where +
                        "; the header and the contents disagree");
  return dims;
}

}  // namespace

ImageSet read_idx(const std::string& images_path, const std::string& labels_path, int classes) {
  ImageSet s;
  const std::vector<int64_t> idims = read_idx_file(images_path, 3, "image", s.pixels);
  std::vector<uint8_t> labels;
  const std::vector<int64_t> ldims = read_idx_file(labels_path, 1, "label", labels);
  if (ldims[0] != idims[0])
    throw DataError(labels_path, 4,
                    "holds " + std::to_string(ldims[0]) + " labels but " + images_path +
                        " holds " + std::to_string(idims[0]) + " images; use matching files");
  s.n = int(idims[0]);  // at most kMaxIdxBytes = 2^30 images: fits
  s.h = int(idims[1]);
  s.w = int(idims[2]);
  s.c = 1;  // IDX images are grayscale: HW is already NHWC with C = 1
  s.labels.resize(std::size_t(s.n));
  const int64_t label_offset = 8;  // magic + one dimension
  for (int i = 0; i < s.n; ++i) {
    const uint8_t label = labels[std::size_t(i)];
    if (label >= classes)
      throw DataError(labels_path, label_offset + i,
                      "label " + std::to_string(label) + " of image " + std::to_string(i) +
                          " is not a class (0 to " + std::to_string(classes - 1) + ")");
    s.labels[i] = label;
  }
  return s;
}

}  // namespace evo
