// Our gradients against a reference file of gradients (PyTorch autograd, by Hugging Face name):
// the largest absolute difference over every registered parameter, and which parameter has it.
// A name the reference lacks, a size that differs, or a reference parameter we do not register
// is a test failure.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/checkpoint/tensor_source.h"
#include "training/adamw.h"

namespace gemmapod {

struct WorstGradient {
  double difference = 0;
  std::string name;
  size_t compared = 0;
};

inline WorstGradient CompareGradients(const AdamW& optimizer, const TensorSource& reference) {
  WorstGradient worst;
  for (const std::string& name : optimizer.names()) {
    if (!reference.Has(name)) {
      ADD_FAILURE() << name << ": not in " << reference.origin();
      continue;
    }
    const Tensor ours = optimizer.grad(name).To(DType::kF32);
    const Tensor theirs = reference.Read(name).To(DType::kF32);
    if (ours.numel() != theirs.numel()) {
      ADD_FAILURE() << name << ": " << ours.numel() << " elements, the reference "
                    << theirs.numel();
      continue;
    }
    for (int64_t i = 0; i < ours.numel(); ++i) {
      const double d = std::fabs(static_cast<double>(ours.data<float>()[i]) -
                                 static_cast<double>(theirs.data<float>()[i]));
      if (d > worst.difference) worst.difference = d, worst.name = name;
    }
    ++worst.compared;
  }
  EXPECT_EQ(optimizer.names().size(), reference.List().size())
      << "a parameter the reference has and we do not register";
  return worst;
}

}  // namespace gemmapod
