// The loss curves of a run as an SVG picture (train and held-out loss against the step), written
// beside the checkpoints and refreshed at each one, so a run can be watched in a browser.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gemmapod {

struct CurvePoint {
  int64_t step;
  double loss;
};

// A self-contained SVG document: both curves on shared axes with ticks, a legend and a title;
// `quantity` names the vertical axis (the loss, or an RL run's reward).
std::string LossCurveSvg(const std::vector<CurvePoint>& train,
                         const std::vector<CurvePoint>& held_out, const std::string& title,
                         const std::string& quantity = "loss");

// Writes `text` to `path` through a temporary file and a rename, so a reader never sees half.
void WriteTextFileAtomically(const std::string& path, const std::string& text);

}  // namespace gemmapod
