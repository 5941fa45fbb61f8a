// The exporters' shared preparation (common.h). Not a file format.
#include "export/common.h"

#include <algorithm>
#include <cmath>

namespace evo::exporting {

std::map<std::string, HostTensor> host_weights(const CompiledDna& plan, const Weights& weights) {
  std::map<std::string, HostTensor> out;
  for (const ParamInfo& p : plan.params) {
    if (!weights.contains(p.key))
      throw ExportError("the weights have no tensor '" + p.key + "' (" + to_string(p.kind) +
                        " of '" + p.owner + "'): they belong to another DNA; pass the weights " +
                        "file trained for this DNA");
    const Tensor& t = weights.at(p.key);
    std::vector<int64_t> shape;
    for (int i = 0; i < t.shape().rank(); ++i) shape.push_back(t.shape()[i]);
    if (shape != p.shape)
      throw ExportError("weight tensor '" + p.key + "' has shape " + t.shape().str() +
                        " but the DNA needs " + Shape(p.shape).str() +
                        ": the weights belong to another DNA (or another input shape)");
    HostTensor h{shape, t.to_host()};
    for (std::size_t i = 0; i < h.values.size(); ++i)
      if (!std::isfinite(h.values[i]))
        throw ExportError("weight tensor '" + p.key + "' holds a non-finite value at element " +
                          std::to_string(i) + ": training diverged; export another individual");
    out.emplace(p.key, std::move(h));
  }
  return out;
}

void standardisation(const CompiledDna& plan, const ExportInfo& info, std::vector<float>& mean,
                     std::vector<float>& inv_std) {
  const std::size_t c = std::size_t(plan.input.c);
  if (info.mean.size() != c || info.std.size() != c)
    throw ExportError("the standardisation has " + std::to_string(info.mean.size()) + " means and " +
                      std::to_string(info.std.size()) + " deviations for a " +
                      std::to_string(c) + "-channel input: give the data set the net was " +
                      "trained on");
  mean.resize(c);
  inv_std.resize(c);
  for (std::size_t k = 0; k < c; ++k) {
    // The same expressions as DeviceDataset::upload (src/train/train.cpp).
    mean[k] = info.mean[k] / 255.0f;
    inv_std[k] = 255.0f / std::max(info.std[k], 1e-3f);
  }
}

std::vector<int64_t> nearest_indices(int in, int out) {
  std::vector<int64_t> idx(std::size_t(std::max(out, 0)));
  for (int i = 0; i < out; ++i) idx[std::size_t(i)] = int64_t(i) * in / out;
  return idx;
}

HostTensor filter_to_oihw(const HostTensor& f) {
  const int64_t co = f.shape[0], kh = f.shape[1], kw = f.shape[2], ci = f.shape[3];
  HostTensor t{{co, ci, kh, kw}, std::vector<float>(f.values.size())};
  for (int64_t o = 0; o < co; ++o)
    for (int64_t y = 0; y < kh; ++y)
      for (int64_t x = 0; x < kw; ++x)
        for (int64_t i = 0; i < ci; ++i)
          t.values[std::size_t(((o * ci + i) * kh + y) * kw + x)] =
              f.values[std::size_t(((o * kh + y) * kw + x) * ci + i)];
  return t;
}

const CompiledDna& check_members(const std::vector<ExportNet>& nets) {
  if (nets.empty()) throw ExportError("nothing to export: no net was given");
  for (const ExportNet& n : nets)
    if (!n.plan || !n.weights) throw ExportError("member " + n.id + " has no DNA or no weights");
  const CompiledDna& first = *nets[0].plan;
  for (const ExportNet& n : nets) {
    if (n.plan->input != first.input || n.plan->classes != first.classes)
      throw ExportError("ensemble member " + n.id + " reads " + n.plan->input.str() + " into " +
                        std::to_string(n.plan->classes) + " classes, but " + nets[0].id +
                        " reads " + first.input.str() + " into " +
                        std::to_string(first.classes) +
                        ": an ensemble's members must share their data set");
  }
  return first;
}

std::vector<std::string> class_names(const CompiledDna& plan, const ExportInfo& info) {
  if (int(info.class_names.size()) == plan.classes) return info.class_names;
  std::vector<std::string> names;
  for (int k = 0; k < plan.classes; ++k) names.push_back(std::to_string(k));
  return names;
}

}  // namespace evo::exporting
