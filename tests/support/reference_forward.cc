#include "tests/support/reference_forward.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace rsd::testing {
namespace {

using Vec = std::vector<double>;

struct Mat {
  const SyntheticTensor* t = nullptr;
  int64_t rows() const { return t->shape.size() == 1 ? 1 : t->shape[0]; }
  int64_t cols() const { return t->shape.back(); }
  Vec Apply(const Vec& x) const {
    Vec y(rows(), 0.0);
    for (int64_t r = 0; r < rows(); ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols(); ++c) s += static_cast<double>(t->values[r * cols() + c]) * x[c];
      y[r] = s;
    }
    return y;
  }
};

// x rounded to the nearest IEEE half (ties to even; the hot K/V cache stores F16, DESIGN.md
// section 4): 11 significant bits, or a multiple of 2^-24 below 2^-14. Finite, small x only.
double RoundToHalf(double x) {
  if (x == 0.0) return x;
  const int e = std::max(std::ilogb(x), -14);
  const double ulp = std::ldexp(1.0, e - 10);
  return std::nearbyint(x / ulp) * ulp;
}

void RoundToHalf(Vec& v) {
  for (double& x : v) x = RoundToHalf(x);
}

Vec RmsNorm(const Vec& x, const SyntheticTensor& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double scale = 1.0 / std::sqrt(ss / x.size() + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * w.values[i];
  return y;
}

void AddBias(Vec& y, const SyntheticTensor* b) {
  if (b == nullptr) return;
  for (size_t i = 0; i < y.size(); ++i) y[i] += b->values[i];
}

// Rotate-half RoPE on each head of v.
void Rope(Vec& v, int n_heads, int hd, int pos, double theta) {
  const int half = hd / 2;
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / hd);
      const double a = v[h * hd + i], b = v[h * hd + i + half];
      v[h * hd + i] = a * std::cos(angle) - b * std::sin(angle);
      v[h * hd + i + half] = b * std::cos(angle) + a * std::sin(angle);
    }
  }
}

}  // namespace

std::vector<std::vector<double>> ReferenceForward(const SyntheticModel& model,
                                                  const std::vector<int32_t>& tokens) {
  const SyntheticModelOptions& o = model.options();
  const int hd = model.head_dim(), nh = o.n_heads, nkv = o.n_kv_heads, d = o.d_model;
  const int n = static_cast<int>(tokens.size());
  auto T = [&](const std::string& name) { return model.Find(name); };
  std::vector<Vec> x(n, Vec(d));
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < d; ++i) x[t][i] = T("token_embd.weight")->values[tokens[t] * d + i];
  }
  for (int l = 0; l < o.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    std::vector<Vec> q(n), k(n), v(n);
    for (int t = 0; t < n; ++t) {
      Vec xn = RmsNorm(x[t], *T(p + "attn_norm.weight"), o.rms_eps);
      q[t] = Mat{T(p + "attn_q.weight")}.Apply(xn);
      k[t] = Mat{T(p + "attn_k.weight")}.Apply(xn);
      v[t] = Mat{T(p + "attn_v.weight")}.Apply(xn);
      AddBias(q[t], T(p + "attn_q.bias"));
      AddBias(k[t], T(p + "attn_k.bias"));
      AddBias(v[t], T(p + "attn_v.bias"));
      Rope(q[t], nh, hd, t, o.rope_theta);
      Rope(k[t], nkv, hd, t, o.rope_theta);
      RoundToHalf(k[t]);
      RoundToHalf(v[t]);
    }
    for (int t = 0; t < n; ++t) {
      Vec attn(static_cast<size_t>(nh) * hd, 0.0);
      for (int h = 0; h < nh; ++h) {
        const int kvh = h / (nh / nkv);
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (int j = 0; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += q[t][h * hd + i] * k[j][kvh * hd + i];
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int j = 0; j <= t; ++j) {
          for (int i = 0; i < hd; ++i) attn[h * hd + i] += s[j] / z * v[j][kvh * hd + i];
        }
      }
      Vec out = Mat{T(p + "attn_output.weight")}.Apply(attn);
      for (int i = 0; i < d; ++i) x[t][i] += out[i];
      Vec xn = RmsNorm(x[t], *T(p + "ffn_norm.weight"), o.rms_eps);
      Vec g = Mat{T(p + "ffn_gate.weight")}.Apply(xn), u = Mat{T(p + "ffn_up.weight")}.Apply(xn);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      Vec down = Mat{T(p + "ffn_down.weight")}.Apply(g);
      for (int i = 0; i < d; ++i) x[t][i] += down[i];
    }
  }
  const SyntheticTensor* out = T("output.weight") ? T("output.weight") : T("token_embd.weight");
  std::vector<std::vector<double>> logits(n);
  for (int t = 0; t < n; ++t) {
    logits[t] = Mat{out}.Apply(RmsNorm(x[t], *T("output_norm.weight"), o.rms_eps));
  }
  return logits;
}

}  // namespace rsd::testing
