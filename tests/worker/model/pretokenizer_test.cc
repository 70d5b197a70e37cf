// Pre-tokenizer splits, checked against what llama.cpp's regexes produce for each pre-tokenizer.
#include "worker/model/pretokenizer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"
#include "worker/model/unicode.h"

namespace rsd {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using K = PreTokenizerKind;

std::vector<std::string> Split(K kind, const std::string& text) {
  const std::vector<uint32_t> cpts = DecodeUtf8Lax(text);
  std::vector<std::string> words;
  size_t pos = 0;
  for (uint32_t len : PreTokenize(kind, cpts)) {
    EXPECT_GT(len, 0u);
    std::string w;
    for (size_t i = pos; i < pos + len; ++i) AppendUtf8(cpts[i], &w);
    words.push_back(w);
    pos += len;
  }
  EXPECT_EQ(pos, cpts.size());
  return words;
}

TEST(PreTokenizerTest, Gpt2) {
  EXPECT_THAT(Split(K::kGpt2, "Hello world"), ElementsAre("Hello", " world"));
  EXPECT_THAT(Split(K::kGpt2, "I'm"), ElementsAre("I", "'m"));
  // Contractions are case-sensitive in GPT-2's regex.
  EXPECT_THAT(Split(K::kGpt2, "I'M"), ElementsAre("I", "'", "M"));
  // \s+(?!\S) leaves the last space of a run to the next word...
  EXPECT_THAT(Split(K::kGpt2, "a  b"), ElementsAre("a", " ", " b"));
  // ...except at the end of the text.
  EXPECT_THAT(Split(K::kGpt2, "hi   "), ElementsAre("hi", "   "));
  EXPECT_THAT(Split(K::kGpt2, "12345 678"), ElementsAre("12345", " 678"));
  EXPECT_THAT(Split(K::kGpt2, "x+=1;"), ElementsAre("x", "+=", "1", ";"));
  EXPECT_THAT(Split(K::kGpt2, " \xE6\x97\xA5\xE6\x9C\xAC!"),
              ElementsAre(" \xE6\x97\xA5\xE6\x9C\xAC", "!"));
  // Non-ASCII whitespace (U+00A0) is \s; an emoji is [^\s\p{L}\p{N}].
  EXPECT_THAT(Split(K::kGpt2,
                    "a\xC2\xA0"
                    "b\xF0\x9F\x99\x82"),
              ElementsAre("a", "\xC2\xA0", "b", "\xF0\x9F\x99\x82"));
  EXPECT_THAT(Split(K::kGpt2, "\n\n x"), ElementsAre("\n\n", " x"));
}

TEST(PreTokenizerTest, SmollmSplitsEveryDigit) {
  EXPECT_THAT(Split(K::kSmollm, "12345 678"),
              ElementsAre("1", "2", "3", "4", "5", " ", "6", "7", "8"));
  EXPECT_THAT(Split(K::kSmollm, "abc 12"), ElementsAre("abc", " ", "1", "2"));
  // Non-ASCII digits are \p{N} too.
  EXPECT_THAT(Split(K::kSmollm, "\xD9\xA1\xD9\xA2"), ElementsAre("\xD9\xA1", "\xD9\xA2"));
}

TEST(PreTokenizerTest, Llama3) {
  EXPECT_THAT(Split(K::kLlama3, "12345 678"), ElementsAre("123", "45", " ", "678"));
  EXPECT_THAT(Split(K::kLlama3, "I'M"), ElementsAre("I", "'M"));
  EXPECT_THAT(Split(K::kLlama3, "Hello\n\nworld"), ElementsAre("Hello", "\n\n", "world"));
  EXPECT_THAT(Split(K::kLlama3, "a\n  b"), ElementsAre("a", "\n", " ", " b"));
  EXPECT_THAT(Split(K::kLlama3, "...!!!\n\nx"), ElementsAre("...!!!\n\n", "x"));
  // [^\r\n\p{L}\p{N}]?\p{L}+ takes one leading non-letter.
  EXPECT_THAT(Split(K::kLlama3, "(hello) \tworld"), ElementsAre("(hello", ")", " ", "\tworld"));
  EXPECT_THAT(Split(K::kLlama3, "x "), ElementsAre("x", " "));
}

TEST(PreTokenizerTest, Qwen2SplitsEveryDigit) {
  EXPECT_THAT(Split(K::kQwen2, "x12345"), ElementsAre("x", "1", "2", "3", "4", "5"));
  EXPECT_THAT(Split(K::kQwen2, "I'M ok"), ElementsAre("I", "'M", " ok"));
}

TEST(PreTokenizerTest, DefaultRunsFourRegexes) {
  // [\p{P}$+<=>^~|]+, then GPT-2, then \p{N}+, then [0-9]{3}.
  EXPECT_THAT(Split(K::kDefault, "Hello, world!!! 12345"),
              ElementsAre("Hello", ",", " world", "!!!", " ", "123", "45"));
}

TEST(PreTokenizerTest, EmptyText) { EXPECT_TRUE(Split(K::kGpt2, "").empty()); }

TEST(PreTokenizerTest, Names) {
  EXPECT_EQ(PreTokenizerFromName("smollm")->kind, K::kSmollm);
  EXPECT_EQ(PreTokenizerFromName("llama-bpe")->kind, K::kLlama3);
  EXPECT_TRUE(PreTokenizerFromName("llama3")->ignore_merges);
  EXPECT_EQ(PreTokenizerFromName("qwen2")->kind, K::kQwen2);
  EXPECT_EQ(PreTokenizerFromName("gpt-2")->kind, K::kGpt2);
  EXPECT_EQ(PreTokenizerFromName("")->kind, K::kDefault);
  EXPECT_THAT(PreTokenizerFromName("tekken"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tekken")));
}

TEST(UnicodeTest, DecodesInvalidUtf8LikeLlamaCpp) {
  EXPECT_THAT(DecodeUtf8Lax("\xFF"), ElementsAre(0xFFFDu));
  EXPECT_THAT(DecodeUtf8Lax("\xC3\x28"), ElementsAre(0xFFFDu, 0x28u));
  EXPECT_THAT(DecodeUtf8Lax("\xE2\x82"), ElementsAre(0xFFFDu, 0xFFFDu));
  EXPECT_THAT(DecodeUtf8Lax("\xC0\xAF"), ElementsAre(0x2Fu));  // overlong decodes to its value
  EXPECT_THAT(DecodeUtf8Lax("\xF0\x9F\x99\x82"), ElementsAre(0x1F642u));
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9\xF0\x9F\x99\x82"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));
}

TEST(UnicodeTest, Classes) {
  EXPECT_TRUE(CodepointFlags('a') & kCpLetter);
  EXPECT_TRUE(CodepointFlags('7') & kCpNumber);
  EXPECT_TRUE(CodepointFlags(0x0661) & kCpNumber);  // Arabic-Indic one
  EXPECT_TRUE(CodepointFlags(0x65E5) & kCpLetter);  // CJK
  EXPECT_TRUE(CodepointFlags(0x3000) & kCpWhitespace);
  EXPECT_TRUE(CodepointFlags(0x85) & kCpWhitespace);
  EXPECT_FALSE(CodepointFlags(0x200B) & kCpWhitespace);  // ZWSP is a format control
  EXPECT_TRUE(CodepointFlags(0x0301) & kCpMark);
  EXPECT_TRUE(CodepointFlags(0x1F642) & kCpSymbol);
  EXPECT_TRUE(CodepointFlags(0x0378) & kCpUndefined);
  EXPECT_TRUE(CodepointFlags(0x2FFFF) & kCpUndefined);
  EXPECT_EQ(CodepointFlags(0x110000), 0);
  EXPECT_STREQ(UnicodeTablesVersion(), "15.1.0");
}

}  // namespace
}  // namespace rsd
