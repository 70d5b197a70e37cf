// The synthetic-model writer itself: quantizers against ggml's formulas (expected values written
// here from the formulas, not taken from our output), the half-precision conversions, the
// vocabulary, and byte-identical files against the sha256 recorded in tests/goldens/synthetic.json.
#include <openssl/evp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <string>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "tests/worker/model/model_test_helpers.h"

namespace rsd {
namespace {

using testing::DequantizeRow;
using testing::QuantizeRow;

uint16_t Half(const std::vector<uint8_t>& b, size_t at) {
  uint16_t h;
  std::memcpy(&h, b.data() + at, 2);
  return h;
}

std::vector<std::vector<float>> TestRows() {
  std::vector<std::vector<float>> rows;
  testing::SplitMix64 rng(3);
  for (int r = 0; r < 40; ++r) {
    std::vector<float> x(64);
    const float scale = std::ldexp(1.0f, r % 9 - 4);
    for (float& v : x) v = scale * rng.Uniform();
    if (r % 5 == 1) x[7] = -4.0f * scale;  // negative extreme
    if (r % 5 == 2) x[40] = 5.0f * scale;  // positive extreme
    rows.push_back(x);
  }
  rows.push_back(std::vector<float>(64, 0.0f));
  rows.push_back(std::vector<float>(64, 0.25f));
  return rows;
}

TEST(GgmlQuants, Q8_0MatchesTheFormula) {
  for (const std::vector<float>& x : TestRows()) {
    std::vector<uint8_t> q = QuantizeRow(DType::kQ8_0, x.data(), 64);
    ASSERT_EQ(q.size(), 68u);
    std::vector<float> y = DequantizeRow(DType::kQ8_0, q.data(), 64);
    for (int b = 0; b < 2; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      const float d = amax / 127;
      EXPECT_EQ(Half(q, b * 34), F32ToF16(d));
      const float dh = F16ToF32(F32ToF16(d));
      for (int j = 0; j < 32; ++j) {
        const int expect = d == 0 ? 0 : static_cast<int>(std::round(x[b * 32 + j] * (1.0f / d)));
        EXPECT_EQ(static_cast<int8_t>(q[b * 34 + 2 + j]), expect);
        EXPECT_EQ(y[b * 32 + j], expect * dh);
      }
    }
  }
}

TEST(GgmlQuants, Q4_0MatchesTheFormula) {
  for (const std::vector<float>& x : TestRows()) {
    std::vector<uint8_t> q = QuantizeRow(DType::kQ4_0, x.data(), 64);
    ASSERT_EQ(q.size(), 36u);
    std::vector<float> y = DequantizeRow(DType::kQ4_0, q.data(), 64);
    for (int b = 0; b < 2; ++b) {
      const float* xb = x.data() + b * 32;
      float max = 0;
      for (int j = 0; j < 32; ++j) {
        if (std::fabs(xb[j]) > std::fabs(max)) max = xb[j];
      }
      const float d = max / -8, id = d == 0 ? 0 : 1 / d;
      EXPECT_EQ(Half(q, b * 18), F32ToF16(d));
      for (int j = 0; j < 32; ++j) {
        const int nib = std::min(15, static_cast<int>(xb[j] * id + 8.5f));
        const uint8_t byte = q[b * 18 + 2 + j % 16];
        EXPECT_EQ(j < 16 ? (byte & 15) : (byte >> 4), nib) << j;  // j and j+16 share a byte
        EXPECT_EQ(y[b * 32 + j], (nib - 8) * F16ToF32(F32ToF16(d)));
      }
    }
  }
}

TEST(GgmlQuants, Q4_1MatchesTheFormula) {
  for (const std::vector<float>& x : TestRows()) {
    std::vector<uint8_t> q = QuantizeRow(DType::kQ4_1, x.data(), 64);
    ASSERT_EQ(q.size(), 40u);
    std::vector<float> y = DequantizeRow(DType::kQ4_1, q.data(), 64);
    for (int b = 0; b < 2; ++b) {
      const float* xb = x.data() + b * 32;
      float lo = xb[0], hi = xb[0];
      for (int j = 0; j < 32; ++j) lo = std::min(lo, xb[j]), hi = std::max(hi, xb[j]);
      const float d = (hi - lo) / 15, id = d == 0 ? 0 : 1 / d;
      EXPECT_EQ(Half(q, b * 20), F32ToF16(d));       // d first,
      EXPECT_EQ(Half(q, b * 20 + 2), F32ToF16(lo));  // then m
      for (int j = 0; j < 32; ++j) {
        const int nib = std::min(15, static_cast<int>((xb[j] - lo) * id + 0.5f));
        const uint8_t byte = q[b * 20 + 4 + j % 16];
        EXPECT_EQ(j < 16 ? (byte & 15) : (byte >> 4), nib) << j;
        EXPECT_EQ(y[b * 32 + j], nib * F16ToF32(F32ToF16(d)) + F16ToF32(F32ToF16(lo)));
      }
    }
  }
}

TEST(GgmlQuants, HandWorkedBlocks) {
  std::vector<float> ramp(32);
  for (int j = 0; j < 32; ++j) ramp[j] = static_cast<float>(j);
  // Q4_0: d = 31 / -8 = -3.875 (f16 0xC3C0); x=0 -> 8, x=16 -> 4, x=31 -> 0.
  std::vector<uint8_t> q = QuantizeRow(DType::kQ4_0, ramp.data(), 32);
  EXPECT_EQ(Half(q, 0), 0xC3C0);
  EXPECT_EQ(q[2], 0x48);
  EXPECT_EQ(q[17] & 15, 4);  // x=15 -> 15 * -0.258 + 8.5 = 4.63 -> 4
  EXPECT_EQ(q[17] >> 4, 0);  // x=31 -> 0
  EXPECT_EQ(DequantizeRow(DType::kQ4_0, q.data(), 32)[31], 31.0f);
  // Q8_0 of j - 16: d = 16/127; x=-16 -> -127, x=15 -> round(119.06) = 119.
  for (float& v : ramp) v -= 16;
  q = QuantizeRow(DType::kQ8_0, ramp.data(), 32);
  EXPECT_EQ(static_cast<int8_t>(q[2]), -127);
  EXPECT_EQ(static_cast<int8_t>(q[33]), 119);
}

TEST(HalfConversions, F16EdgeCases) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65519.99f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);  // the tie rounds to even: Inf
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(F32ToF16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -14)), 0x0400);         // smallest normal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);         // smallest subnormal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);         // tie -> even (zero)
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -26)), 0x0001);         // 0.75 ulp -> up
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);         // 1.5 ulp, tie -> even
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie -> even
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(3.0f, -11)), 0x3C02);  // tie -> even (up)
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  const uint16_t nan = F32ToF16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(F16ToF32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToF32(0x7E01)));
  for (uint32_t h = 0; h < 0x10000; ++h) {  // every non-NaN half survives the round trip
    if ((h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0) continue;
    ASSERT_EQ(F32ToF16(F16ToF32(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(HalfConversions, BF16EdgeCases) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  EXPECT_EQ(F32ToBF16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);        // tie -> even
  EXPECT_EQ(F32ToBF16(1.0f + std::ldexp(3.0f, -8)), 0x3F82);        // tie -> even (up)
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to Inf
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(F32ToBF16(std::ldexp(1.0f, -133)), 0x0001);  // smallest bf16 subnormal
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(std::numeric_limits<float>::signaling_NaN()))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7F80) == 0x7F80 && (h & 0x007F) != 0) continue;
    ASSERT_EQ(F32ToBF16(BF16ToF32(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(SyntheticModel, VocabularyAndMerges) {
  std::vector<std::string> v = testing::SyntheticVocab(320);
  ASSERT_EQ(v.size(), 320u);
  EXPECT_EQ(v[0], "<unk>");
  EXPECT_EQ(v[3], "<0x00>");
  EXPECT_EQ(v[258], "<0xFF>");
  EXPECT_EQ(v[259], "\xe2\x96\x81");
  EXPECT_EQ(std::set<std::string>(v.begin(), v.end()).size(), v.size());
  nlohmann::json tok = nlohmann::json::parse(
      testing::SyntheticModel(testing::FindSyntheticModel("gqa")->options).TokenizerJson());
  for (const auto& m : tok["model"]["merges"]) {
    std::string s = m.get<std::string>();
    size_t sp = s.find(' ');
    ASSERT_NE(sp, std::string::npos);
    EXPECT_TRUE(tok["model"]["vocab"].contains(s.substr(0, sp))) << s;
    EXPECT_TRUE(tok["model"]["vocab"].contains(s.substr(sp + 1))) << s;
    EXPECT_TRUE(tok["model"]["vocab"].contains(s.substr(0, sp) + s.substr(sp + 1))) << s;
  }
}

std::string Sha256(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) hex += absl::StrFormat("%02x", md[i]);
  return hex;
}

TEST(SyntheticModel, FilesMatchTheGoldenSha256) {
  auto text = ReadFileToString(testing::SourceDir() + "/tests/goldens/synthetic.json");
  ASSERT_TRUE(text.ok()) << text.status();
  nlohmann::json golden = nlohmann::json::parse(*text);
  std::vector<std::string> names;
  for (const auto& m : golden["models"]) {
    const std::string name = m["name"].get<std::string>();
    names.push_back(name);
    SCOPED_TRACE(name);
    const testing::SyntheticCatalogEntry* e = testing::FindSyntheticModel(name);
    ASSERT_NE(e, nullptr);
    testing::SyntheticModel model(e->options);
    const auto& f = m["files"];
    EXPECT_EQ(f[name + ".gguf"], Sha256(model.GgufBytes()));
    EXPECT_EQ(f[name + "-hf/config.json"], Sha256(model.ConfigJson()));
    EXPECT_EQ(f[name + "-hf/model.safetensors"], Sha256(model.SafetensorsBytes()));
    EXPECT_EQ(f[name + "-hf/tokenizer.json"], Sha256(model.TokenizerJson()));
    EXPECT_EQ(f[name + "-hf/tokenizer_config.json"], Sha256(model.TokenizerConfigJson()));
  }
  std::vector<std::string> catalog;
  for (const auto& e : testing::SyntheticModelCatalog()) catalog.push_back(e.name);
  EXPECT_EQ(names, catalog) << "tests/goldens/synthetic.json is stale: rerun "
                               "tools/goldens/synthetic_goldens.py";
}

}  // namespace
}  // namespace rsd
