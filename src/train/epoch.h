// The order in which training draws its batches, shared by train_model (train.cpp) and
// train_data_parallel (parallel.cpp) so that both draw exactly the same images: a fresh
// permutation of the training set each epoch, shuffled on the host from the context's random
// stream and uploaded with the labels in that order; a batch is a slice of it. Not the
// augmentation (augment_batch's Philox counters) and not a data loader.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "evo/train.h"

namespace evo::detail {

class EpochOrder {
 public:
  // Takes one block of ctx's random stream (the shuffle's seed), as train_model always has.
  EpochOrder(const DeviceDataset& data, int batch, Context& ctx)
      : labels_(data.host_train_labels),
        batch_(batch),
        per_epoch_(data.train.n / batch),
        perm_(std::size_t(data.train.n)),
        perm_labels_(perm_.size()),
        perm_dev_(Tensor::empty({int64_t(perm_.size())}, ctx.device(), DType::I32)),
        perm_labels_dev_(Tensor::empty({int64_t(perm_.size())}, ctx.device(), DType::I32)) {
    std::iota(perm_.begin(), perm_.end(), 0);
    const Philox4 seed_bits = ctx.rng().take(1).block(0);
    shuffler_.seed((uint64_t(seed_bits.v[0]) << 32) | seed_bits.v[1]);
  }

  // Call before each step: at an epoch's first step, shuffles and uploads the next permutation
  // (after the previous epoch's batches, which read the old one, are done).
  void prepare(int step, Context& ctx) {
    if (step % per_epoch_ != 0) return;
    std::shuffle(perm_.begin(), perm_.end(), shuffler_);
    for (std::size_t i = 0; i < perm_.size(); ++i) perm_labels_[i] = labels_[std::size_t(perm_[i])];
    ctx.synchronize();
    ctx.backend().copy(perm_dev_.raw(), perm_.data(), perm_.size() * 4, CopyKind::HostToDevice,
                       ctx.stream());
    ctx.backend().copy(perm_labels_dev_.raw(), perm_labels_.data(), perm_.size() * 4,
                       CopyKind::HostToDevice, ctx.stream());
  }
  // Device pointers to image `first` of step `step`'s batch: its training-set indices and labels.
  const int32_t* indices(int step, int first = 0) const {
    return perm_dev_.data<int32_t>() + offset(step, first);
  }
  const int32_t* labels(int step, int first = 0) const {
    return perm_labels_dev_.data<int32_t>() + offset(step, first);
  }

 private:
  int64_t offset(int step, int first) const {
    return int64_t(step % per_epoch_) * batch_ + first;
  }

  const std::vector<int32_t>& labels_;
  int batch_, per_epoch_;
  std::vector<int32_t> perm_, perm_labels_;
  std::mt19937_64 shuffler_;
  Tensor perm_dev_, perm_labels_dev_;
};

}  // namespace evo::detail
