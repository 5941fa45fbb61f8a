// A per-worker workspace arena: stream-ordered bump allocation with marks, reused step after step.
// Not a general allocator: memory comes back only by rewinding to a mark (LIFO), never piecemeal.
#pragma once

#include <cstddef>
#include <vector>

#include "evo/device.h"

namespace evo {

class DeviceBackend;

// All work of one worker goes through one stream, so a buffer handed out again after a rewind is
// only touched by kernels queued after every earlier use of it: no synchronisation is needed to
// reuse memory, which is why a training step allocates nothing from the device.
class Arena {
 public:
  static constexpr std::size_t kAlignment = 256;  // cudaMalloc's guarantee; enough for any vector

  Arena(DeviceBackend& backend, int ordinal, void* stream, std::size_t initial_bytes = 0);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // `bytes` rounded up to kAlignment; grows by adding a chunk when the current ones are full.
  void* allocate(std::size_t bytes);
  template <typename T>
  T* allocate_n(std::size_t n) {
    return static_cast<T*>(allocate(n * sizeof(T)));
  }

  struct Mark {
    std::size_t chunk;
    std::size_t offset;
  };
  Mark mark() const { return {current_, offset_}; }
  // Everything allocated after `m` becomes free again.
  void rewind(Mark m);
  // Frees everything; when the arena had to grow, replaces its chunks by one chunk of the peak
  // size (after synchronising the stream), so the next round of the same work allocates nothing.
  void reset();

  std::size_t capacity() const;      // bytes held from the device
  std::size_t in_use() const;        // bytes handed out now
  std::size_t peak() const { return peak_; }
  std::size_t device_allocations() const { return device_allocations_; }

  // Rewinds to the mark taken at construction when it goes out of scope.
  class Scope {
   public:
    explicit Scope(Arena& arena) : arena_(arena), mark_(arena.mark()) {}
    ~Scope() { arena_.rewind(mark_); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Arena& arena_;
    Mark mark_;
  };

 private:
  struct Chunk {
    void* base;
    std::size_t size;
  };
  void add_chunk(std::size_t min_bytes);

  DeviceBackend& backend_;
  int ordinal_;
  void* stream_;
  std::vector<Chunk> chunks_;
  std::size_t current_ = 0;  // index of the chunk being bumped
  std::size_t offset_ = 0;   // bytes used in chunks_[current_]
  std::size_t peak_ = 0;
  std::size_t device_allocations_ = 0;
};

}  // namespace evo
