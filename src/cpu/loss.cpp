// CPU softmax cross-entropy against integer labels: summed loss, correct count, gradient.
// Not a general softmax: rows are the batch, the loss is always reduced over it.
#include <cmath>
#include <string>

#include "evo/error.h"
#include "evo/ops.h"

namespace evo::cpu {

// logits: [N, classes], labels: [N] -> *result, dlogits: [N, classes] (when not null), the
// gradient of loss_sum / grad_n
void softmax_cross_entropy(Context&, int n, int classes, const float* logits, const int32_t* labels,
                           LossResult* result, float* dlogits, int grad_n) {
  if (dlogits && grad_n < 1)
    throw Error("softmax_cross_entropy: grad_n = " + std::to_string(grad_n) + ", needs >= 1");
  double loss_sum = 0.0;
  int32_t correct = 0;
  for (int r = 0; r < n; ++r) {
    const float* z = logits + int64_t(r) * classes;
    const int32_t label = labels[r];
    if (label < 0 || label >= classes)
      throw Error("softmax_cross_entropy: label " + std::to_string(label) + " of row " +
                  std::to_string(r) + " is outside [0, " + std::to_string(classes) +
                  "): check the data set's class count against the model's");
    // Subtracting the row maximum keeps exp() finite; argmax is the first maximum.
    int arg = 0;
    for (int k = 1; k < classes; ++k)
      if (z[k] > z[arg]) arg = k;
    const float zmax = z[arg];
    double sum = 0.0;
    for (int k = 0; k < classes; ++k) sum += std::exp(double(z[k]) - zmax);
    const double log_sum = std::log(sum);
    loss_sum += log_sum - (double(z[label]) - zmax);  // -log softmax(z)[label]
    correct += arg == label;
    if (dlogits) {
      float* d = dlogits + int64_t(r) * classes;
      for (int k = 0; k < classes; ++k) {
        const double p = std::exp(double(z[k]) - zmax - log_sum);
        d[k] = float((p - (k == label ? 1.0 : 0.0)) / grad_n);
      }
    }
  }
  result->loss_sum = float(loss_sum);
  result->correct = correct;
}

}  // namespace evo::cpu
