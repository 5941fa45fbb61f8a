// What the ONNX and the PyTorch exporters share: the weights checked against the DNA and copied to
// the host, the standardisation constants, the nearest-resize indices and the filter layout change.
// Not a format of its own: each exporter writes its file from these.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "evo/export.h"

namespace evo::exporting {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Every tensor of plan.params, checked (present, same shape, finite) and on the host, by key.
// Throws ExportError naming the key: the weights belong to another DNA, or training diverged.
std::map<std::string, HostTensor> host_weights(const CompiledDna& plan, const Weights& weights);

// The constants of (x - mean[c]) * inv_std[c] for x = pixel / 255, computed exactly as evo's data
// upload does (mean / 255, 255 / max(std, 1e-3)), so the exported net sees the same floats.
// Throws ExportError when info's mean/std do not have one value per input channel.
void standardisation(const CompiledDna& plan, const ExportInfo& info, std::vector<float>& mean,
                     std::vector<float>& inv_std);

// Row (or column) i of a nearest resize from `in` to `out` reads floor(i * in / out): evo's rule
// (ops.h resize_nearest_forward), in integers so no float rounding can pick a neighbour.
std::vector<int64_t> nearest_indices(int in, int out);

// A convolution filter from evo's [C_out, KH, KW, C_in] to ONNX's and PyTorch's [C_out, C_in, KH, KW].
HostTensor filter_to_oihw(const HostTensor& f);

// The first net of an export, after checking that there is one and that every net is whole and
// reads the same input shape into the same classes (an ensemble's members share both). Throws
// ExportError saying which member differs.
const CompiledDna& check_members(const std::vector<ExportNet>& nets);

// The class names to record: info's, or "0", "1", ... when it has none.
std::vector<std::string> class_names(const CompiledDna& plan, const ExportInfo& info);

}  // namespace evo::exporting
