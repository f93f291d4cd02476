#include "training/loss_curve.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "runtime/checkpoint/output_file.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

constexpr double kWidth = 720, kHeight = 420;
constexpr double kLeft = 70, kRight = 20, kTop = 40, kBottom = 50;

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`.
double TickStep(double span, int count) {
  const double raw = span / count;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0}) {
    if (m * power >= raw) return m * power;
  }
  return 10 * power;
}

std::string Format(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

std::string LossCurveSvg(const std::vector<CurvePoint>& train,
                         const std::vector<CurvePoint>& held_out, const std::string& title,
                         const std::string& quantity) {
  double max_step = 1, lo = INFINITY, hi = -INFINITY;
  for (const auto* curve : {&train, &held_out}) {
    for (const CurvePoint& p : *curve) {
      if (!std::isfinite(p.loss)) continue;
      max_step = std::max(max_step, static_cast<double>(p.step));
      lo = std::min(lo, p.loss);
      hi = std::max(hi, p.loss);
    }
  }
  if (!(lo <= hi)) lo = 0, hi = 1;
  if (hi - lo < 1e-9) hi = lo + 1;
  const double y_step = TickStep(hi - lo, 5);
  lo = std::floor(lo / y_step) * y_step;
  hi = std::ceil(hi / y_step) * y_step;
  const double x_step = TickStep(max_step, 6);
  const double x_max = std::ceil(max_step / x_step) * x_step;
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  const auto X = [&](double step) { return kLeft + step / x_max * plot_w; };
  const auto Y = [&](double loss) { return kTop + (hi - loss) / (hi - lo) * plot_h; };

  std::string svg = StrCat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", kWidth, "\" height=\"", kHeight,
      "\" font-family=\"sans-serif\" font-size=\"12\">\n", "<rect width=\"100%\" height=\"100%\" ",
      "fill=\"white\"/>\n", "<text x=\"", kWidth / 2, "\" y=\"22\" text-anchor=\"middle\" ",
      "font-size=\"14\">", Escape(title), "</text>\n");
  for (double v = lo; v <= hi + y_step / 2; v += y_step) {
    svg += StrCat("<line x1=\"", kLeft, "\" x2=\"", kLeft + plot_w, "\" y1=\"", Y(v), "\" y2=\"",
                  Y(v), "\" stroke=\"#ddd\"/><text x=\"", kLeft - 6, "\" y=\"", Y(v) + 4,
                  "\" text-anchor=\"end\">", Format(v), "</text>\n");
  }
  for (double s = 0; s <= x_max + x_step / 2; s += x_step) {
    svg += StrCat("<line x1=\"", X(s), "\" x2=\"", X(s), "\" y1=\"", kTop, "\" y2=\"",
                  kTop + plot_h, "\" stroke=\"#eee\"/><text x=\"", X(s), "\" y=\"",
                  kTop + plot_h + 16, "\" text-anchor=\"middle\">", Format(s), "</text>\n");
  }
  svg += StrCat("<rect x=\"", kLeft, "\" y=\"", kTop, "\" width=\"", plot_w, "\" height=\"", plot_h,
                "\" fill=\"none\" stroke=\"#333\"/>\n", "<text x=\"", kLeft + plot_w / 2, "\" y=\"",
                kHeight - 10, "\" text-anchor=\"middle\">step</text>\n", "<text x=\"16\" y=\"",
                kTop + plot_h / 2, "\" text-anchor=\"middle\" ", "transform=\"rotate(-90 16 ",
                kTop + plot_h / 2, ")\">", quantity, "</text>\n");
  const auto polyline = [&](const std::vector<CurvePoint>& curve, const char* color, bool dots) {
    std::string points;
    for (const CurvePoint& p : curve) {
      if (!std::isfinite(p.loss)) continue;
      points += StrCat(X(static_cast<double>(p.step)), ",", Y(p.loss), " ");
      if (dots) {
        svg += StrCat("<circle cx=\"", X(static_cast<double>(p.step)), "\" cy=\"", Y(p.loss),
                      "\" r=\"3\" fill=\"", color, "\"/>\n");
      }
    }
    if (!points.empty()) {
      svg += StrCat("<polyline fill=\"none\" stroke=\"", color, "\" stroke-width=\"1.5\" ",
                    "points=\"", points, "\"/>\n");
    }
  };
  polyline(train, "#1f77b4", false);
  polyline(held_out, "#ff7f0e", true);
  const double lx = kLeft + plot_w - 130, ly = kTop + 12;
  svg += StrCat("<line x1=\"", lx, "\" x2=\"", lx + 20, "\" y1=\"", ly, "\" y2=\"", ly,
                "\" stroke=\"#1f77b4\" stroke-width=\"2\"/><text x=\"", lx + 26, "\" y=\"", ly + 4,
                "\">train</text>\n", "<line x1=\"", lx, "\" x2=\"", lx + 20, "\" y1=\"", ly + 18,
                "\" y2=\"", ly + 18, "\" stroke=\"#ff7f0e\" stroke-width=\"2\"/><text x=\"",
                lx + 26, "\" y=\"", ly + 22, "\">held-out</text>\n</svg>\n");
  return svg;
}

void WriteTextFileAtomically(const std::string& destination, const std::string& text) {
  const std::string path = OutputTarget(destination);
  const std::string tmp = StrCat(path, ".tmp-", getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    GEMMAPOD_CHECK(out.good(), tmp, ": cannot create the file");
    out << text;
    out.flush();
    GEMMAPOD_CHECK(out.good(), tmp, ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(StrCat(path, ": cannot move the finished file into place"));
  }
}

}  // namespace gemmapod
