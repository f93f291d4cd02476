// The chat page `gemmapod serve` answers at `/`: one static HTML document with its style and
// script inline (no external assets, so it works offline and behind any proxy), talking to
// /v1/chat/completions and streaming the answers as they come.
#pragma once

#include <string_view>

namespace gemmapod {

std::string_view ChatPageHtml();

}  // namespace gemmapod
