// Taking a trained network elsewhere: one DNA with its weights written as a standard ONNX model, or
// as a self-contained PyTorch module (a Python file) with its weights in a safetensors file. Not
// an importer, and not a general graph converter: it writes exactly the ops evo's DNAs use.
//
// Both formats compute the same function as `evo eval` (docs in README "Taking the model
// elsewhere" and data/dna/README.md "Exported models"):
//   input  "image": float32 [N, C, H, W] (NCHW, batch dimension dynamic), pixel values / 255, so
//          in [0, 1], channels in the data set's order (RGB for CIFAR and folders of images)
//   the input standardisation as explicit nodes, (x - mean[c]) * inv_std[c], the same arithmetic
//          as evo's (not folded into the first convolution: the convolution's zero padding would
//          then pad with standardised zeros, which is a different function at the borders)
//   every vertex: the sum of its in-edges (convolutions with 'same' padding k/2 and stride 2^s,
//          no bias; skips brought to the vertex's shape by nearest resize, exact integer indices
//          floor(i * H / OH) as two Gathers, then channel truncation or zero padding), then
//          batch norm in inference form (the running statistics, eps kBatchNormEps) and ReLU, or
//          nothing for a linear vertex
//   the head: global average pool, the fully connected layer
//   outputs "logits" [N, classes] and "probabilities" (softmax of the logits) [N, classes]
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "evo/dna.h"
#include "evo/error.h"
#include "evo/model.h"

namespace evo {

// What the weights alone do not say: the data the net was trained on.
struct ExportInfo {
  std::string id;       // the individual's id, or the DNA file's name
  std::string dataset;  // "fashion-mnist", ...
  // Per-channel standardisation in pixel units 0..255, as Dataset::mean and Dataset::std.
  std::vector<float> mean, std;
  std::vector<std::string> class_names;  // may be empty (then "0", "1", ...)
};

// An export that cannot be done (weights that do not match the DNA, standardisation constants of
// the wrong length, a format this build lacks). Nothing has been written when it is thrown.
class ExportError : public Error {
 public:
  using Error::Error;
};

// The ONNX opset the exporter writes (and IR version 7, which every ONNX Runtime since 1.6 reads).
inline constexpr int kOnnxOpset = 13;

// True when this build has ONNX (libonnx-dev, libprotobuf-dev found at configure time).
bool onnx_export_available();
// What to do about a build without it (the ONNX exporter's error, said early by `evo export`).
inline constexpr const char* kOnnxUnavailable =
    "this evo was built without ONNX: install libonnx-dev, libprotobuf-dev and protobuf-compiler "
    "(tools/setup.sh does) and rebuild; --format pytorch works without it";

// One net of an export: its compiled DNA, its weights and its name (an ensemble member's id).
struct ExportNet {
  const CompiledDna* plan = nullptr;
  const Weights* weights = nullptr;
  std::string id;
};

// The ONNX model of `plan` with `weights` (host or device tensors; every ParamInfo of the plan must
// be present with its shape), checked with onnx::checker before anything is written, then written
// atomically to `path`. Throws ExportError (or evo::Error naming the file when writing fails).
void export_onnx(const CompiledDna& plan, const Weights& weights, const ExportInfo& info,
                 const std::string& path);
// The serialised model bytes, as export_onnx would write them (for tests).
std::string onnx_model_bytes(const CompiledDna& plan, const Weights& weights,
                             const ExportInfo& info);

// An ensemble (a search's final phase hands one over when it beats its best member on the
// validation set) as one model of the same contract: its members side by side on the one input,
// "probabilities" the mean of their softmax (what evo's ensemble accuracy ranks by), "logits" the
// log of that mean (so that a softmax of it gives the mean back). The members must read the same
// input shape into the same classes; `info` is the data set they were trained on, and info.id
// names the ensemble. With one net, the same file as the single-net export.
void export_onnx(const std::vector<ExportNet>& nets, const ExportInfo& info,
                 const std::string& path);
std::string onnx_model_bytes(const std::vector<ExportNet>& nets, const ExportInfo& info);

// The PyTorch export: `py_path`, a Python file defining `class EvoNet(torch.nn.Module)` for this
// DNA (torch and the standard library only), and `weights_path`, its state_dict in the safetensors
// format (readable by safetensors.torch.load_file, or by the file's own 20-line reader when the
// safetensors package is absent). Loading takes two lines:
//     from model import EvoNet                     # the .py file's name
//     net = EvoNet.load("model.safetensors").eval()
// Both files written atomically; the Python file names its weights file only as a default.
void export_pytorch(const CompiledDna& plan, const Weights& weights, const ExportInfo& info,
                    const std::string& py_path, const std::string& weights_path);
// An ensemble as one PyTorch module: `EvoNet` holds the members (modules m0, m1, ..., each of its
// own class EvoMember0, ...) and returns the log of their mean softmax (as export_onnx's
// ensemble); the weights file holds every member's state_dict behind "m0.", "m1.", ...
void export_pytorch(const std::vector<ExportNet>& nets, const ExportInfo& info,
                    const std::string& py_path, const std::string& weights_path);

// The safetensors bytes of a set of named tensors, float32 (`values`) or int64 (`ints`, when
// is_int); metadata goes to "__metadata__" (string values). Throws ExportError when a tensor's
// value count does not match its shape.
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  bool is_int = false;
  std::vector<int64_t> ints;

  NamedTensor(std::string n, std::vector<int64_t> s, std::vector<float> v)
      : name(std::move(n)), shape(std::move(s)), values(std::move(v)) {}
  static NamedTensor int64(std::string n, std::vector<int64_t> s, std::vector<int64_t> v) {
    NamedTensor t(std::move(n), std::move(s), {});
    t.is_int = true;
    t.ints = std::move(v);
    return t;
  }
};
std::string safetensors_bytes(const std::vector<NamedTensor>& tensors,
                              const std::vector<std::pair<std::string, std::string>>& metadata);

}  // namespace evo
