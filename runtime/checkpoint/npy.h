// NumPy .npy files (format 1.0, C order): how logits leave gemmapod for comparison with any other
// engine, and how reference logits come in.
#pragma once

#include <string>

#include "runtime/tensor.h"

namespace gemmapod {

// f32 -> '<f4', i32 -> '<i4'. Written atomically (temporary name, then rename).
void WriteNpy(const std::string& path, const Tensor& tensor);

// '<f4' and '<f8' (narrowed) -> f32; '<i4' and '<i8' (range-checked) -> i32. Fortran order and
// other dtypes are refused; every error names the file.
Tensor ReadNpy(const std::string& path);

}  // namespace gemmapod
