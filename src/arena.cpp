// The workspace arena: chunks from the device, bumped and rewound in stream order.
// Not thread-safe: one arena per worker context.
#include "evo/arena.h"

#include <algorithm>

#include "evo/backend.h"
#include "evo/error.h"

namespace evo {

namespace {
std::size_t round_up(std::size_t n) {
  return (n + Arena::kAlignment - 1) / Arena::kAlignment * Arena::kAlignment;
}
constexpr std::size_t kMinChunk = std::size_t(1) << 20;
}  // namespace

Arena::Arena(DeviceBackend& backend, int ordinal, void* stream, std::size_t initial_bytes)
    : backend_(backend), ordinal_(ordinal), stream_(stream) {
  if (initial_bytes) add_chunk(initial_bytes);
}

Arena::~Arena() {
  // Kernels still queued may read the chunks: wait for them first. On a device whose context a
  // fault has broken the wait fails (and nothing runs any more): free all the same, never throw.
  try {
    if (!chunks_.empty()) backend_.synchronize(stream_);
  } catch (const Error&) {
  }
  for (const Chunk& c : chunks_) backend_.deallocate(c.base, ordinal_);
}

void Arena::add_chunk(std::size_t min_bytes) {
  // Geometric growth keeps the number of device allocations logarithmic in the peak.
  const std::size_t size = std::max({round_up(min_bytes), kMinChunk, capacity()});
  chunks_.push_back({backend_.allocate(size, ordinal_), size});
  ++device_allocations_;
}

void* Arena::allocate(std::size_t bytes) {
  const std::size_t need = round_up(std::max<std::size_t>(bytes, 1));
  while (current_ < chunks_.size() && offset_ + need > chunks_[current_].size) {
    ++current_;
    offset_ = 0;
  }
  if (current_ == chunks_.size()) {
    add_chunk(need);
    offset_ = 0;
  }
  void* p = static_cast<char*>(chunks_[current_].base) + offset_;
  offset_ += need;
  peak_ = std::max(peak_, in_use());
  return p;
}

void Arena::rewind(Mark m) {
  if (m.chunk > current_ || (m.chunk == current_ && m.offset > offset_))
    throw Error("Arena::rewind to a mark that is ahead of the arena (marks must nest)");
  current_ = m.chunk;
  offset_ = m.offset;
}

void Arena::reset() {
  current_ = 0;
  offset_ = 0;
  if (chunks_.size() > 1) {
    // Kernels queued on the stream may still read the old chunks: wait before freeing them.
    const std::size_t total = round_up(peak_);
    backend_.synchronize(stream_);
    for (const Chunk& c : chunks_) backend_.deallocate(c.base, ordinal_);
    chunks_.clear();
    add_chunk(total);
  }
}

std::size_t Arena::capacity() const {
  std::size_t total = 0;
  for (const Chunk& c : chunks_) total += c.size;
  return total;
}

std::size_t Arena::in_use() const {
  std::size_t used = offset_;
  for (std::size_t i = 0; i < current_ && i < chunks_.size(); ++i) used += chunks_[i].size;
  return used;
}

}  // namespace evo
