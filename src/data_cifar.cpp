// The binary CIFAR-10 / CIFAR-100 batches: fixed-size records, planar RGB turned into NHWC, read a
// chunk at a time under kMaxCifarRecords. Not the python-pickle versions (use the binary
// download), nor file discovery (data.cpp).
//
// A record: `label_bytes` label bytes (CIFAR-10: the class; CIFAR-100: coarse, then fine), then
// 1024 red, 1024 green and 1024 blue bytes, each plane a row-major 32x32 image.
#include "evo/data.h"

namespace evo {

namespace {
constexpr int kCifarSide = 32;
constexpr int kCifarPlane = kCifarSide * kCifarSide;  // 1024
constexpr int kCifarPixels = 3 * kCifarPlane;         // 3072
constexpr int kCifar100Coarse = 20;                   // superclasses, checked but not used
}  // namespace

ImageSet read_cifar(const std::vector<std::string>& paths, int label_bytes, int classes) {
  ImageSet s;
  s.h = s.w = kCifarSide;
  s.c = 3;
  const std::size_t record = std::size_t(label_bytes) + kCifarPixels;
  const std::string limit = "the " + std::to_string(uint64_t(kMaxCifarRecords) * record) +
                            " bytes a CIFAR file may hold (evo::kMaxCifarRecords = " +
                            std::to_string(kMaxCifarRecords) + " records)";
  // Records are converted a chunk at a time: 1,024 records are 3 MB, and neither a file nor what a
  // gzipped one inflates to is ever held whole beside the pixels.
  std::vector<uint8_t> chunk(1024 * record);
  for (const std::string& path : paths) {
    DataFile f(path, uint64_t(kMaxCifarRecords) * record, limit);
    const std::string where = f.gzipped() ? " (in the uncompressed data)" : "";
    auto truncated = [&](uint64_t size) {
      throw DataError(
          path, int64_t(size),
          "the file ends" + where + " inside record " + std::to_string(size / record) +
              " (records are " + std::to_string(label_bytes) + " label byte" +
              (label_bytes > 1 ? "s" : "") + " + 3072 pixel bytes = " + std::to_string(record) +
              " bytes); it is truncated, download it again");
    };
    // A plain file's size is known (and under the limit: DataFile checked it): check it first.
    if (!f.gzipped() && f.disk_size() == 0)
      throw DataError(path, 0, "the file is empty; it should hold CIFAR records");
    if (!f.gzipped() && f.disk_size() % record != 0) truncated(f.disk_size());
    if (!f.gzipped()) {
      s.pixels.reserve(s.pixels.size() + f.disk_size() / record * kCifarPixels);
      s.labels.reserve(s.labels.size() + f.disk_size() / record);
    }
    int count = 0;  // at most kMaxCifarRecords
    for (;;) {
      const std::size_t got = f.read(chunk.data(), chunk.size());
      if (got % record != 0) truncated(f.position());
      const int in_chunk = int(got / record);
      const std::size_t first = s.pixels.size();
      s.pixels.resize(first + std::size_t(in_chunk) * kCifarPixels);
      for (int k = 0; k < in_chunk; ++k) {
        const int r = count + k;  // record number in the file
        const uint8_t* rec = chunk.data() + std::size_t(k) * record;
        const std::size_t label_at = std::size_t(label_bytes) - 1;  // CIFAR-100: the fine label
        if (rec[label_at] >= classes)
          throw DataError(path, int64_t(std::size_t(r) * record + label_at),
                          "label " + std::to_string(rec[label_at]) + " of record " +
                              std::to_string(r) + " is not a class (0 to " +
                              std::to_string(classes - 1) + "); is this the right CIFAR version?");
        if (label_bytes == 2 && rec[0] >= kCifar100Coarse)
          throw DataError(path, int64_t(std::size_t(r) * record),
                          "coarse label " + std::to_string(rec[0]) + " of record " +
                              std::to_string(r) + " is not a CIFAR-100 superclass (0 to 19)");
        s.labels.push_back(rec[label_at]);
        // [3, 32, 32] planes -> [32, 32, 3] channels last.
        const uint8_t* planes = rec + label_bytes;
        uint8_t* out = s.pixels.data() + first + std::size_t(k) * kCifarPixels;
        for (int p = 0; p < kCifarPlane; ++p)
          for (int ch = 0; ch < 3; ++ch) out[p * 3 + ch] = planes[ch * kCifarPlane + p];
      }
      count += in_chunk;
      if (got < chunk.size()) break;  // the end (for gzip: its CRC and length checked)
    }
    if (count == 0) throw DataError(path, 0, "the file is empty; it should hold CIFAR records");
    s.n += count;
  }
  return s;
}

}  // namespace evo
