// Tokenizer behaviour on small synthetic vocabularies: merge order, special-token partitioning,
// decoding, byte fallback, round trips and spec validation.
#include "worker/model/tokenizer.h"

#include <limits>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"
#include "tests/worker/model/tokenizer_test_util.h"

namespace rsd {
namespace {

using ::rsd::testing::ByteLevel;
using ::rsd::testing::ByteLevelSpec;
using ::rsd::testing::IdOf;
using ::rsd::testing::SpmSpec;
using ::rsd::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<Tokenizer> Make(const TokenizerSpec& spec) {
  auto t = Tokenizer::Create(spec);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(t).value() : nullptr;
}

std::vector<std::string> Pieces(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(t.TokenBytes(id));
  return out;
}

TEST(BpeTokenizerTest, MergesLowestRankFirst) {
  // "a b" outranks "b c": "abc" -> ab|c. Swapped ranks give a|bc.
  auto t1 = Make(ByteLevelSpec({{"a", "b"}, {"b", "c"}}, {}));
  EXPECT_THAT(Pieces(*t1, t1->Encode("abc", false)), ElementsAre("ab", "c"));
  auto t2 = Make(ByteLevelSpec({{"b", "c"}, {"a", "b"}}, {}));
  EXPECT_THAT(Pieces(*t2, t2->Encode("abc", false)), ElementsAre("a", "bc"));
}

TEST(BpeTokenizerTest, EqualRanksMergeLeftmostFirst) {
  auto t = Make(ByteLevelSpec({{"a", "a"}}, {}));
  EXPECT_THAT(Pieces(*t, t->Encode("aaa", false)), ElementsAre("aa", "a"));
  EXPECT_THAT(Pieces(*t, t->Encode("aaaa", false)), ElementsAre("aa", "aa"));
}

TEST(BpeTokenizerTest, MergesChainWithinWordsOnly) {
  auto t = Make(ByteLevelSpec(
      {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}, {"o", " "}}, {}));
  // The pre-tokenizer cuts "hello world" into "hello" and " world": "o " never merges.
  EXPECT_THAT(Pieces(*t, t->Encode("hello world", false)),
              ElementsAre("hello", " w", "o", "r", "l", "d"));
}

TEST(BpeTokenizerTest, SpecialTokensLongestFirst) {
  const auto spec = ByteLevelSpec({}, {{"<|im_start|>", TokenType::kControl},
                                       {"<|im|>", TokenType::kControl},
                                       {"<|im_end|>", TokenType::kControl},
                                       {"<tool>", TokenType::kUserDefined}});
  auto t = Make(spec);
  const int32_t start = IdOf(spec, "<|im_start|>"), end = IdOf(spec, "<|im_end|>");
  const int32_t tool = IdOf(spec, "<tool>");
  EXPECT_THAT(t->Encode("<|im_start|>x<|im_end|>", true), ElementsAre(start, 'x', end));
  EXPECT_THAT(t->Encode("<|im_start|><|im_start|>", true), ElementsAre(start, start));
  // Without parse_special, control texts are plain text; user-defined ones still match, as in
  // llama.cpp.
  const std::vector<int32_t> plain = t->Encode("<|im_start|>x<tool>", false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), start), 0);
  EXPECT_EQ(plain.back(), tool);
  EXPECT_EQ(t->Decode(plain, false), "<|im_start|>x<tool>");
}

TEST(BpeTokenizerTest, DecodeHidesControlUnlessRendered) {
  const auto spec =
      ByteLevelSpec({}, {{"<|im_end|>", TokenType::kControl}, {"<tool>", TokenType::kUserDefined}});
  auto t = Make(spec);
  const std::vector<int32_t> ids = t->Encode("hi<|im_end|><tool>", true);
  EXPECT_EQ(t->Decode(ids, false), "hi<tool>");
  EXPECT_EQ(t->Decode(ids, true), "hi<|im_end|><tool>");
  EXPECT_EQ(t->TokenBytes(IdOf(spec, "<|im_end|>")), "<|im_end|>");
  EXPECT_EQ(t->TokenBytes(-1), "");
  EXPECT_EQ(t->TokenBytes(t->vocab_size()), "");
  EXPECT_TRUE(t->IsControl(IdOf(spec, "<|im_end|>")));
  EXPECT_FALSE(t->IsControl(IdOf(spec, "<tool>")));
  EXPECT_FALSE(t->IsControl(-3));
}

TEST(BpeTokenizerTest, EncodeSegmentsParsesSpecialsOnlyWhereAsked) {
  const auto spec = ByteLevelSpec({{" ", " "}}, {{"<|im_start|>", TokenType::kControl}});
  auto t = Make(spec);
  const int32_t start = IdOf(spec, "<|im_start|>");
  const std::vector<TextSegment> segs = {{"<|im_start|>", true}, {"<|im_start|>", false}};
  const std::vector<int32_t> ids = t->EncodeSegments(segs);
  EXPECT_EQ(ids.front(), start);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), start), 1);
  // Raw text across a segment boundary tokenizes as one text: "a\n" + "  b" splits as
  // "a" "\n " " b" (the whitespace run keeps its last space for the word), not "\n" "  b".
  const std::vector<TextSegment> joined = {{"a\n", true}, {"  b", false}};
  EXPECT_EQ(t->EncodeSegments(joined), t->Encode("a\n  b", false));
}

TEST(BpeTokenizerTest, InvalidUtf8BecomesReplacementCharacters) {
  auto t = Make(ByteLevelSpec({}, {}));
  // llama.cpp replaces each invalid byte with U+FFFD before the merges.
  EXPECT_EQ(t->Decode(t->Encode("a\xFF"
                                "b",
                                false),
                      false),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(t->Decode(t->Encode("\xE2\x82", false), false), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(SpmTokenizerTest, HighestScoreFirstWithSpacePrefix) {
  auto t = Make(SpmSpec({{"_", -9},
                         {"h", -9},
                         {"e", -9},
                         {"l", -9},
                         {"o", -9},
                         {"he", -1},
                         {"ll", -2},
                         {"hell", -3},
                         {"hello", -4},
                         {"_hello", -5},
                         {"el", -0.5}}));
  // "el" scores highest, so it merges first and blocks "he" and "ll"; no token spells "hel" or
  // "ell", so nothing merges further.
  EXPECT_THAT(Pieces(*t, t->Encode("hello", false)), ElementsAre(" ", "h", "el", "l", "o"));
}

TEST(SpmTokenizerTest, MergesToWholeWords) {
  auto t = Make(SpmSpec({{"_", -9},
                         {"h", -9},
                         {"e", -9},
                         {"l", -9},
                         {"o", -9},
                         {"he", -1},
                         {"ll", -2},
                         {"hell", -3},
                         {"hello", -4},
                         {"_hello", -5}}));
  EXPECT_THAT(Pieces(*t, t->Encode("hello", false)), ElementsAre(" hello"));
  EXPECT_THAT(Pieces(*t, t->Encode("hello hello", false)), ElementsAre(" hello", " hello"));
  EXPECT_EQ(t->Decode(t->Encode("hello", false), false), "hello");
  EXPECT_EQ(t->Decode(t->Encode(" hello", false), false), " hello");
}

TEST(SpmTokenizerTest, ByteFallbackForUnknownCharacters) {
  auto t = Make(SpmSpec({{"_", -1}, {"a", -1}}));
  const std::vector<int32_t> ids = t->Encode("a\xC3\xA9", false);  // "aé"
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(t->spec().tokens[ids[2]], "<0xC3>");
  EXPECT_EQ(t->spec().tokens[ids[3]], "<0xA9>");
  EXPECT_EQ(t->Decode(ids, false), "a\xC3\xA9");
  // Invalid UTF-8 passes through byte by byte.
  EXPECT_EQ(t->Decode(t->Encode("\xFF\x80z", false), false), "\xFF\x80z");
}

TEST(SpmTokenizerTest, ControlTextNeverMergesIntoControlToken) {
  auto t = Make(SpmSpec({{"_", -1}, {"<", -1}, {"s", -1}, {">", -1}, {"<s", -1}}));
  const std::vector<int32_t> ids = t->Encode("<s>", false);
  for (int32_t id : ids) EXPECT_FALSE(t->IsControl(id)) << id;
  EXPECT_THAT(t->Encode("<s>", true), ElementsAre(1));
}

TEST(SpmTokenizerTest, SpacePrefixAfterSpecialTokens) {
  auto t = Make(SpmSpec({{"_", -1}, {"a", -1}, {"_a", -0.5}}));
  const int32_t a_prefixed = IdOf(t->spec(),
                                  "\xE2\x96\x81"
                                  "a");
  EXPECT_THAT(t->Encode("</s>a", true), ElementsAre(2, a_prefixed));
  // The detokenizer strips one space from the first token only, as llama.cpp's does.
  EXPECT_EQ(t->Decode(t->Encode("a</s>a", true), true), "a</s> a");
}

// Random valid UTF-8: ASCII words and punctuation, whitespace runs, Latin, Greek, CJK, emoji
// (4-byte), combining marks, and optionally special-token texts.
std::string RandomText(std::mt19937& rng, const std::vector<std::string>& specials) {
  static const std::vector<std::string> kAtoms = {"a",
                                                  "Z",
                                                  "q",
                                                  "7",
                                                  "42",
                                                  " ",
                                                  "  ",
                                                  "\t",
                                                  "\n",
                                                  "\r\n",
                                                  "'s",
                                                  "'LL",
                                                  ".",
                                                  "!?",
                                                  "$",
                                                  "\xC3\xA9",
                                                  "\xCE\xBB",
                                                  "\xD0\x96",
                                                  "\xE6\x97\xA5",
                                                  "\xE6\x9C\xAC",
                                                  "\xE3\x81\x82",
                                                  "\xF0\x9F\x99\x82",
                                                  "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
                                                  "\xCC\x81",
                                                  "\xC2\xA0",
                                                  "\xE3\x80\x80",
                                                  "\xE2\x80\x8B",
                                                  "\xEF\xBF\xBD",
                                                  "\xE2\x96\x81",
                                                  "\xC4\xA0"};
  std::uniform_int_distribution<int> len(0, 40);
  std::uniform_int_distribution<size_t> pick(0, kAtoms.size() + specials.size() - 1);
  std::string s;
  for (int i = len(rng); i > 0; --i) {
    const size_t k = pick(rng);
    s += k < kAtoms.size() ? kAtoms[k] : specials[k - kAtoms.size()];
  }
  return s;
}

TEST(TokenizerRoundTripTest, ByteLevelAnyText) {
  auto t = Make(ByteLevelSpec({{" ", " "}, {"a", "a"}, {"\xE6", "\x97"}, {"\xE6\x97", "\xA5"}},
                              {{"<|im_start|>", TokenType::kControl}}));
  std::mt19937 rng(7);
  for (int i = 0; i < 500; ++i) {
    const std::string s = RandomText(rng, {"<|im_start|>", "<|im_"});
    EXPECT_EQ(t->Decode(t->Encode(s, false), false), s);
    EXPECT_EQ(t->Decode(t->Encode(s, true), true), s);
  }
}

TEST(TokenizerRoundTripTest, SentencePieceAnyText) {
  auto t = Make(SpmSpec({{"_", -1}, {"a", -1}, {"_a", -0.5}, {"7", -1}, {"\xE6\x97\xA5", -1}}));
  std::mt19937 rng(11);
  for (int i = 0; i < 500; ++i) {
    const std::string s = RandomText(rng, {"</s", "<s"});
    // A literal U+2581 in the input is SentencePiece's space and decodes as " " (by design).
    if (s.find("\xE2\x96\x81") != std::string::npos) continue;
    EXPECT_EQ(t->Decode(t->Encode(s, false), false), s);
  }
}

TEST(TokenizerCreateTest, RejectsInconsistentSpecs) {
  TokenizerSpec s = ByteLevelSpec({}, {});
  s.model = "wordpiece";
  EXPECT_THAT(Tokenizer::Create(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("unsupported tokenizer model")));
  s = ByteLevelSpec({}, {}, "no-such-pre");
  EXPECT_THAT(Tokenizer::Create(s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported pre-tokenizer")));
  s = ByteLevelSpec({}, {});
  s.merges.push_back(ByteLevel("x") + " " + ByteLevel("yz"));
  EXPECT_THAT(Tokenizer::Create(s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a token")));
  s = ByteLevelSpec({}, {});
  s.merges.push_back("nospace");
  EXPECT_THAT(Tokenizer::Create(s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no space")));
  s = ByteLevelSpec({}, {});
  s.types.pop_back();
  EXPECT_THAT(Tokenizer::Create(s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token types")));
  s = ByteLevelSpec({}, {});
  s.eos_id = 256;
  EXPECT_THAT(Tokenizer::Create(s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eos token id 256")));
  s = ByteLevelSpec({}, {});
  s.types[3] = static_cast<TokenType>(9);
  EXPECT_THAT(Tokenizer::Create(s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid type 9")));
  s = TokenizerSpec{};
  s.model = "llama";
  EXPECT_THAT(Tokenizer::Create(s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no tokens")));
}

// Random specs, valid or not: Create refuses cleanly or gives a tokenizer that survives any bytes.
TEST(TokenizerFuzzTest, RandomSpecsAndInputs) {
  std::mt19937_64 rng(99);
  auto random_text = [&](size_t max_len) {
    std::string t;
    for (size_t n = rng() % (max_len + 1); n > 0; --n) {
      const uint64_t r = rng();
      t.push_back(static_cast<char>((r & 1) ? 'a' + (r >> 1) % 4 : (r >> 1) & 0xFF));
    }
    return t;
  };
  const char* pres[] = {"gpt-2", "smollm", "llama3", "qwen2", "default"};
  int created = 0;
  for (int i = 0; i < 300; ++i) {
    TokenizerSpec s = (i % 2) ? ByteLevelSpec({{"a", "b"}, {"ab", "c"}}, {}, pres[i % 5])
                              : SpmSpec({{"_", -1}, {"a", -2}, {"ab", -1}});
    for (int k = 0; k < 20; ++k) {
      s.tokens.push_back(random_text(4));
      s.types.push_back(static_cast<TokenType>(rng() % 8));  // 7 is invalid
      if (!s.scores.empty()) {
        const float scores[] = {-1.0f, 0.0f, std::numeric_limits<float>::quiet_NaN(),
                                std::numeric_limits<float>::infinity()};
        s.scores.push_back(scores[rng() % 4]);
      }
    }
    for (int k = 0; k < 5; ++k) {
      const std::string& a = s.tokens[rng() % s.tokens.size()];
      const std::string& b = s.tokens[rng() % s.tokens.size()];
      s.merges.push_back((rng() % 4) ? a + " " + b : random_text(6));
    }
    if (rng() % 4 == 0) s.eos_id = static_cast<int32_t>(rng() % (s.tokens.size() + 3)) - 1;
    auto tok = Tokenizer::Create(s);
    if (!tok.ok()) {
      EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
      continue;
    }
    ++created;
    for (int k = 0; k < 10; ++k) {
      const std::string text = random_text(60);
      const std::vector<int32_t> ids = (*tok)->Encode(text, k % 2 == 0);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < (*tok)->vocab_size());
      (void)(*tok)->Decode(ids, true);
      const std::string tail = random_text(8);  // segments only view their text
      const std::vector<TextSegment> segs = {{text, true}, {tail, false}};
      (void)(*tok)->EncodeSegments(segs);
      (void)(*tok)->TokenBytes(static_cast<int32_t>(rng() % 1000) - 10);
    }
  }
  EXPECT_GT(created, 0);
}

}  // namespace
}  // namespace rsd
