// Sampling: greedy ties, counter-based randomness, top-k / top-p cuts, the sampled distribution,
// parameter validation; and generation's stop conditions (EOS, stop strings, max tokens).
#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/exp.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "worker/engine/engine.h"
#include "worker/engine/turn_decoder.h"

namespace rsd {
namespace {

using testing::StatusIs;

TEST(Sampler, GreedyTakesTheLargestAndTiesGoToTheLowestId) {
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
  SamplingParams p;
  EXPECT_EQ(SampleToken(l, p, 0), 1);
  p.temperature = 1.0f;
  p.top_k = 1;  // top-1 is greedy whatever the temperature
  EXPECT_EQ(SampleToken(l, p, 7), 1);
}

TEST(Sampler, DrawsArePureFunctionsOfSeedAndPosition) {
  std::vector<float> l(50);
  for (int i = 0; i < 50; ++i) l[i] = std::sin(i * 1.7f);
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  std::vector<int32_t> a, b;
  for (int pos = 0; pos < 200; ++pos) a.push_back(SampleToken(l, p, pos));
  for (int pos = 0; pos < 200; ++pos) b.push_back(SampleToken(l, p, pos));
  EXPECT_EQ(a, b);
  // Another seed changes the draws; the same seed at another position is a different draw.
  p.seed = 43;
  std::vector<int32_t> c;
  for (int pos = 0; pos < 200; ++pos) c.push_back(SampleToken(l, p, pos));
  EXPECT_NE(a, c);
  EXPECT_NE(CounterUniform(42, 5), CounterUniform(42, 6));
  EXPECT_EQ(CounterUniform(42, 5), CounterUniform(42, 5));
}

TEST(Sampler, FrequenciesFollowTheSoftmax) {
  // Three candidates with logits 0, 1, 2 at temperature 1: p = e^l / sum.
  std::vector<float> l = {0.0f, 1.0f, 2.0f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 9;
  std::map<int32_t, int> count;
  const int n = 60000;
  for (int pos = 0; pos < n; ++pos) count[SampleToken(l, p, pos)]++;
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  for (int t = 0; t < 3; ++t) {
    const double expected = std::exp(static_cast<double>(t)) / z;
    const double sd = std::sqrt(expected * (1 - expected) / n);
    EXPECT_NEAR(count[t] / static_cast<double>(n), expected, 5 * sd) << t;
  }
  // Temperature 0.5 sharpens: p ∝ e^(2l).
  p.temperature = 0.5f;
  count.clear();
  for (int pos = 0; pos < n; ++pos) count[SampleToken(l, p, pos)]++;
  const double z2 = 1 + std::exp(2.0) + std::exp(4.0);
  EXPECT_NEAR(count[2] / static_cast<double>(n), std::exp(4.0) / z2, 0.01);
}

TEST(Sampler, TopKAndTopPCutTheTail) {
  std::vector<float> l = {3.0f, 2.9f, 2.8f, -5.0f, -6.0f, 0.0f};
  SamplingParams p;
  p.temperature = 5.0f;  // nearly flat: without a cut every id would appear
  p.seed = 1;
  p.top_k = 3;
  for (int pos = 0; pos < 2000; ++pos) EXPECT_LT(SampleToken(l, p, pos), 3);
  p.top_k = 0;
  // top-p: the three leading ids hold well over half the (flat-ish) mass with T = 0.3.
  p.temperature = 0.3f;
  p.top_p = 0.5f;
  std::map<int32_t, int> seen;
  for (int pos = 0; pos < 2000; ++pos) seen[SampleToken(l, p, pos)]++;
  for (auto [id, c] : seen) EXPECT_LT(id, 3) << "id " << id << " is outside the nucleus";
}

// The order sampling takes candidates in, as a comparison sort through the logits defines it
// (what SampleToken did before the radix sort): logit descending, ties by the lower id.
std::vector<int32_t> ComparisonOrder(const std::vector<float>& l) {
  std::vector<int32_t> ids(l.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
  return ids;
}

// SampleToken's definition written out plainly over that order (temperature, top-k, top-p, the
// counter draw), as an independent reference for the fast path.
int32_t ReferenceSample(const std::vector<float>& l, const SamplingParams& p, double u) {
  const std::vector<int32_t> ids = ComparisonOrder(l);
  size_t keep = p.top_k > 0 ? std::min<size_t>(p.top_k, ids.size()) : ids.size();
  std::vector<float> w(keep);
  float total = 0.0f;
  for (size_t i = 0; i < keep; ++i) {
    w[i] = cpu::Exp((l[ids[i]] - l[ids[0]]) / p.temperature);
    total = total + w[i];
  }
  if (p.top_p < 1.0f) {
    float cum = 0.0f;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      cum = cum + w[i];
      if (cum >= p.top_p * total) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = 0.0f;
    for (size_t i = 0; i < keep; ++i) total = total + w[i];
  }
  const double target = u * static_cast<double>(total);
  double cum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cum += w[i];
    if (target < cum) return ids[i];
  }
  return ids[keep - 1];
}

TEST(Sampler, RadixOrderIsTheComparisonOrderOnTiesZerosAndInfinities) {
  std::mt19937 rng(3);
  for (size_t n : {1, 2, 3, 100, 2049, 49152}) {
    for (int variant = 0; variant < 5; ++variant) {
      std::vector<float> l(n);
      std::normal_distribution<float> logit(0.0f, 4.0f);
      for (float& x : l) x = logit(rng);
      // Coarse values make many ties; signed zeros tie with each other; infinities at the ends.
      if (variant == 1) {
        for (float& x : l) x = std::round(x);
      }
      if (variant == 2) {
        for (size_t i = 0; i < n; ++i) l[i] = i % 3 == 0 ? 0.0f : (i % 3 == 1 ? -0.0f : l[i]);
      }
      if (variant == 3) {
        l[n / 2] = INFINITY;
        l[0] = -INFINITY;
      }
      if (variant == 4) std::fill(l.begin(), l.end(), 1.5f);
      EXPECT_EQ(SortedCandidates(l), ComparisonOrder(l)) << "n " << n << " variant " << variant;
    }
  }
}

TEST(Sampler, TemperatureTopKAndTopPDrawWhatTheReferenceDraws) {
  std::mt19937 rng(4);
  std::vector<float> l(49152);
  std::normal_distribution<float> logit(0.0f, 3.0f);
  for (float& x : l) x = std::round(logit(rng) * 64.0f) / 64.0f;  // with ties
  int checked = 0;
  // Low temperatures leave a few candidates above the negligible weights, high ones all of them;
  // an infinite logit turns the split off. (With a NaN logit the comparison order is undefined,
  // so there is no reference: the draw stays a valid id, below.)
  for (int variant = 0; variant < 3; ++variant) {
    std::vector<float> v = l;
    if (variant == 1) v[77] = -INFINITY;
    if (variant == 2) v[4000] = INFINITY;
    for (float t : {0.05f, 0.7f, 1.9f, 40.0f}) {
      for (int k : {0, 2, 40, 50000}) {
        for (float top_p : {1.0f, 0.9f, 0.5f}) {
          SamplingParams p;
          p.temperature = t;
          p.top_k = k;
          p.top_p = top_p;
          p.seed = static_cast<uint64_t>(k) * 31 + static_cast<uint64_t>(t * 10);
          for (int64_t pos = 0; pos < (variant == 0 ? 4 : 1); ++pos) {
            ASSERT_EQ(SampleToken(v, p, pos), ReferenceSample(v, p, CounterUniform(p.seed, pos)))
                << "variant " << variant << " T " << t << " k " << k << " top_p " << top_p
                << " position " << pos;
            checked++;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 4 * 4 * 3 * (4 + 1 + 1));
  l[77] = NAN;
  SamplingParams p;
  p.temperature = 0.7f;
  const int32_t drawn = SampleToken(l, p, 0);
  EXPECT_TRUE(drawn >= 0 && drawn < static_cast<int32_t>(l.size())) << drawn;
}

// A draw that walks past every candidate of non-negligible weight: the float total rounded up
// past the double running sum (1 + 1.5 * 2^-24 rounds to 1 + 2^-23), so a draw near 1 reaches
// the candidates whose weights are below 2^-24, in their order; then past all of them.
TEST(Sampler, ADrawNearOneWalksIntoTheNegligibleCandidatesInOrder) {
  const float w_small = std::log(1.5f) - 24.0f * std::log(2.0f);  // weight ~1.5 * 2^-24
  std::vector<float> l = {0.0f, w_small, -30.0f, -20.0f, -20.0f, -25.0f};
  std::vector<float> big(3000, -40.0f);  // enough ids for the radix path of the order
  l.insert(l.end(), big.begin(), big.end());
  SamplingParams p;
  p.temperature = 1.0f;
  for (double u : {0.0, 0.5, 1.0 - 0x1p-40, 1.0 - 0x1p-53}) {
    for (int k : {0, 4}) {
      p.top_k = k;
      const int32_t got = SampleWithDraw(l, p, u);
      EXPECT_EQ(got, ReferenceSample(l, p, u)) << "u " << u << " k " << k;
      if (u > 0.9) {
        EXPECT_GE(got, 2) << "the draw reached the negligible candidates";
      }
    }
  }
}

TEST(Sampler, ValidationNamesTheField) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THAT(ValidateSamplingParams(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("temperature")));
  p = SamplingParams{};
  p.temperature = NAN;
  EXPECT_THAT(ValidateSamplingParams(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("temperature")));
  p = SamplingParams{};
  p.top_p = 0.0f;
  EXPECT_THAT(ValidateSamplingParams(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("top_p")));
  p = SamplingParams{};
  p.top_k = -3;
  EXPECT_THAT(ValidateSamplingParams(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("top_k")));
}

class GenerateStops : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* entry = testing::FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    testing::SyntheticModel model(entry->options);
    path_ = testing::MakeTempDir("rsd-stops") + "/gqa.gguf";
    ASSERT_TRUE(model.WriteGguf(path_).ok());
    EngineOptions o;
    o.model_path = path_;
    auto e = Engine::Create(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(e).value();
  }
  // Free-running greedy tokens from a fixed prompt.
  GenerateResult Run(GenerateParams p) {
    SessionId seq = engine_->CreateSequence();
    auto r = engine_->Generate(seq, std::vector<int32_t>{1, 50, 60, 70}, p);
    EXPECT_TRUE(r.ok()) << r.status();
    engine_->DestroySequence(seq);
    return r.ok() ? *r : GenerateResult{};
  }
  std::string path_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(GenerateStops, MaxTokensStopStringsAndEos) {
  GenerateParams p;
  p.max_tokens = 12;
  p.stop_at_eos = false;
  GenerateResult full = Run(p);
  ASSERT_EQ(full.tokens.size(), 12u);
  EXPECT_EQ(full.finish_reason, "length");
  // A stop string made of the text of tokens 3..4 ends generation right after token 4 appears
  // (the tokens up to and including the match stay).
  std::string prefix =
      engine_->tokenizer().Decode(std::span<const int32_t>(full.tokens.data(), 3), false);
  std::string stop =
      engine_->tokenizer().Decode(std::span<const int32_t>(full.tokens.data() + 3, 2), false);
  if (!stop.empty() && prefix.find(stop) == std::string::npos) {
    p.stop = {stop};
    GenerateResult s = Run(p);
    EXPECT_EQ(s.finish_reason, "stop");
    ASSERT_LE(s.tokens.size(), 5u);
    EXPECT_TRUE(std::equal(s.tokens.begin(), s.tokens.end(), full.tokens.begin()));
    // The answer text ends before the stop string (as OpenAI and llama.cpp return it).
    EXPECT_EQ(s.text, full.text.substr(0, full.text.find(stop)));
  }
  // EOS: sampled tokens that are stop tokens end the turn ("eos").
  p.stop.clear();
  p.stop_at_eos = true;
  GenerateResult e = Run(p);
  auto stops = engine_->chat_template().StopTokens();
  bool has_stop = false;
  for (size_t i = 0; i < full.tokens.size(); ++i) {
    if (std::find(stops.begin(), stops.end(), full.tokens[i]) != stops.end()) {
      has_stop = true;
      EXPECT_EQ(e.finish_reason, "eos");
      EXPECT_EQ(e.tokens.size(), i + 1);
      break;
    }
  }
  if (!has_stop) {
    EXPECT_EQ(e.tokens, full.tokens);
  }
  // Max tokens 0 appends the prompt and generates nothing.
  p.max_tokens = 0;
  EXPECT_TRUE(Run(p).tokens.empty());
}

// Logits that make greedy sampling pick `id`.
std::vector<float> OneHot(int32_t id, int32_t vocab) {
  std::vector<float> l(static_cast<size_t>(vocab), 0.0f);
  l[static_cast<size_t>(id)] = 1.0f;
  return l;
}

TEST_F(GenerateStops, StreamedTextNeverCarriesAStopString) {
  // The words "a" .. "e" of the synthetic vocabulary (SentencePiece style: each decodes with its
  // leading space, the first without), with the stop string "c d" spread over two tokens.
  const Tokenizer& tok = engine_->tokenizer();
  std::vector<int32_t> ids;
  for (const char* piece : {"a", "b", "c", "d", "e"}) {
    const std::vector<int32_t> t = tok.Encode(piece, false);
    ASSERT_EQ(t.size(), 1u) << piece;
    ids.push_back(t[0]);
  }
  GenerateParams p;
  p.max_tokens = 5;
  p.stop_at_eos = false;
  p.stop = {"c d", "b x"};
  TurnDecoder d(tok, engine_->chat_template().StopTokens(), p);
  std::vector<std::string> pieces;  // what the scheduler streams: after each token, then the rest
  for (size_t i = 0; i < ids.size(); ++i) {
    if (d.Next(OneHot(ids[i], tok.vocab_size()), static_cast<int64_t>(i))) break;
    pieces.push_back(d.TakeText());
  }
  pieces.push_back(d.TakeText());
  EXPECT_EQ(d.finish_reason(), "stop");
  EXPECT_EQ(d.tokens().size(), 4u);  // a b c d: the match's tokens stay in the log
  EXPECT_EQ(d.text(), "a b c d");
  EXPECT_EQ(d.answer(), "a b ");
  // "a": nothing to hold. "a b": "b" may start "b x", held. "a b c": "b " is not "b x"'s start any
  // more, "c" may start "c d", held. "d" completes the match: nothing of it is ever streamed.
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", " ", "b ", ""}));
}

TEST_F(GenerateStops, RefusesWhatCannotFitWithTheNumbers) {
  GenerateParams p;
  p.max_tokens = engine_->model().max_context();  // prompt + this exceeds the context
  SessionId seq = engine_->CreateSequence();
  auto r = engine_->Generate(seq, std::vector<int32_t>{1, 2, 3}, p);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument,
                          ::testing::HasSubstr("exceeds the context length")));
  p.max_tokens = -1;
  EXPECT_THAT(engine_->Generate(seq, std::vector<int32_t>{1}, p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("max_tokens")));
  p.max_tokens = 1;
  EXPECT_THAT(engine_->Generate(SessionId::Random(), std::vector<int32_t>{1}, p),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("unknown sequence")));
  // A bad token id is refused by the forward, naming it; nothing is appended.
  EXPECT_THAT(engine_->Generate(seq, std::vector<int32_t>{1, 999999}, p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("999999")));
  EXPECT_TRUE(engine_->SequenceTokens(seq).empty());
}

}  // namespace
}  // namespace rsd
