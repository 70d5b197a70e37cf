// tokenizer.json parsing: both BPE families, added tokens, special ids, and malformed input.
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_util.h"
#include "tests/worker/model/tokenizer_test_util.h"
#include "worker/model/tokenizer.h"

namespace rsd {
namespace {

using ::rsd::testing::ByteChar;
using ::rsd::testing::ByteLevel;
using ::rsd::testing::IdOf;
using ::rsd::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

// A SmolLM2-shaped byte-level tokenizer.json: 3 special tokens, the byte alphabet, two merges
// (one in the old "a b" form, one in the newer ["a", "b"] form).
json ByteLevelJson() {
  json vocab = json::object();
  vocab["<|endoftext|>"] = 0;
  vocab["<|im_start|>"] = 1;
  vocab["<|im_end|>"] = 2;
  for (int b = 0; b < 256; ++b) vocab[ByteChar(static_cast<uint8_t>(b))] = 3 + b;
  vocab[ByteLevel("he")] = 259;
  vocab[ByteLevel(" he")] = 260;
  json added = json::array();
  const char* names[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", i}, {"content", names[i]}, {"special", true}});
  }
  added.push_back({{"id", 261}, {"content", "<tool>"}, {"special", false}});
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Digits"}, {"individual_digits", true}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"vocab", vocab},
            {"merges", json::array({"h e", json::array({ByteChar(' '), "he"})})}}}};
}

TEST(HfTokenizerJsonTest, ByteLevelBpe) {
  const json cfg = {{"bos_token", "<|im_start|>"},
                    {"eos_token", {{"content", "<|im_end|>"}, {"__type", "AddedToken"}}},
                    {"add_bos_token", false}};
  auto spec = ParseHfTokenizerJson("t/tokenizer.json", ByteLevelJson().dump(), cfg.dump());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, "gpt2");
  EXPECT_EQ(spec->pre, "smollm");
  EXPECT_EQ(spec->tokens.size(), 262u);
  EXPECT_EQ(spec->bos_id, 1);
  EXPECT_EQ(spec->eos_id, 2);
  EXPECT_EQ(spec->eot_id, 2);
  EXPECT_FALSE(spec->add_bos);
  EXPECT_EQ(spec->types[0], TokenType::kControl);
  EXPECT_EQ(spec->types[100], TokenType::kNormal);
  EXPECT_EQ(spec->types[261], TokenType::kUserDefined);
  EXPECT_THAT(spec->merges, ElementsAre("h e", ByteChar(' ') + " he"));
  auto tok = Tokenizer::Create(*spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("<|im_start|>he he12", true),
              ElementsAre(1, 259, 260, 3 + '1', 3 + '2'));
}

TEST(HfTokenizerJsonTest, ByteLevelPreTokenizerNames) {
  json j = ByteLevelJson();
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"use_regex", true}};
  EXPECT_EQ(ParseHfTokenizerJson("p", j.dump(), "")->pre, "gpt-2");
  const std::string llama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", llama3}}}, {"behavior", "Isolated"}},
        {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  EXPECT_EQ(ParseHfTokenizerJson("p", j.dump(), "")->pre, "llama3");
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}},
                          {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  EXPECT_THAT(ParseHfTokenizerJson("dir/tokenizer.json", j.dump(), ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("dir/tokenizer.json: unsupported byte-level pre_tokenizer")));
}

// A Llama-2-shaped SentencePiece BPE: byte fallback, "\u2581" spaces, merges but no scores.
json SentencePieceJson() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    vocab[hex] = 3 + b;
  }
  const std::string sp = "\xE2\x96\x81";
  int id = 259;
  for (const std::string& p :
       {sp, std::string("h"), std::string("e"), std::string("l"), std::string("o"),
        std::string("ll"), std::string("he"), sp + "he", sp + "hell", sp + "hello"}) {
    vocab[p] = id++;
  }
  json added = json::array();
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", i},
                     {"content", i == 0   ? "<unk>"
                                 : i == 1 ? "<s>"
                                          : "</s>"},
                     {"special", true}});
  }
  json j;
  j["added_tokens"] = added;
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", sp}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}};
  j["pre_tokenizer"] = nullptr;
  json single = json::array();
  single.push_back({{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}});
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}};
  j["decoder"] = {{"type", "Sequence"}, {"decoders", json::array({{{"type", "ByteFallback"}}})}};
  j["model"] = {{"type", "BPE"},
                {"byte_fallback", true},
                {"unk_token", "<unk>"},
                {"vocab", vocab},
                {"merges", {"l l", "h e", sp + " he", sp + "he ll", sp + "hell o"}}};
  return j;
}

TEST(HfTokenizerJsonTest, SentencePieceBpe) {
  auto spec = ParseHfTokenizerJson("t.json", SentencePieceJson().dump(), "");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, "llama");
  EXPECT_TRUE(spec->add_space_prefix);
  EXPECT_TRUE(spec->add_bos);
  EXPECT_EQ(spec->bos_id, 1);
  EXPECT_EQ(spec->eos_id, 2);
  EXPECT_EQ(spec->unk_id, 0);
  EXPECT_EQ(spec->types[0], TokenType::kUnknown);
  EXPECT_EQ(spec->types[1], TokenType::kControl);
  EXPECT_EQ(spec->types[3 + 0x41], TokenType::kByte);
  // Scores follow merge order: "ll" (rank 0) before "he" (rank 1) before "\u2581hello".
  const int32_t ll = IdOf(*spec, "ll"), he = IdOf(*spec, "he");
  EXPECT_GT(spec->scores[ll], spec->scores[he]);
  auto tok = Tokenizer::Create(*spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<int32_t> ids = (*tok)->Encode("hello", false);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(spec->tokens[ids[0]], "\xE2\x96\x81hello");
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("hello h\xC3\xA9", false), false), "hello h\xC3\xA9");
}

TEST(HfTokenizerJsonTest, MalformedInput) {
  EXPECT_THAT(ParseHfTokenizerJson("a/tokenizer.json", "{not json", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a/tokenizer.json: tokenizer.json is not a JSON object")));
  EXPECT_THAT(ParseHfTokenizerJson("p", ByteLevelJson().dump(), "[1]"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tokenizer_config.json is not a JSON object")));
  json j = ByteLevelJson();
  j["model"]["type"] = "Unigram";
  EXPECT_THAT(ParseHfTokenizerJson("p", j.dump(), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Unigram")));
  j = ByteLevelJson();
  j["model"]["vocab"]["x"] = "seven";
  EXPECT_THAT(ParseHfTokenizerJson("p", j.dump(), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a valid id")));
  j = ByteLevelJson();
  j["model"]["merges"] = json::array({json::array({1, 2})});
  EXPECT_THAT(ParseHfTokenizerJson("p", j.dump(), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed merge")));
  j = ByteLevelJson();
  j["pre_tokenizer"] = nullptr;
  j["decoder"] = nullptr;
  EXPECT_THAT(ParseHfTokenizerJson("p", j.dump(), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("neither")));
  j = ByteLevelJson();
  j.erase("model");
  EXPECT_THAT(ParseHfTokenizerJson("p", j.dump(), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no \"model\"")));
}

// Bit flips and truncations of both kinds of tokenizer.json: a clean INVALID_ARGUMENT naming the
// file, or a spec that Create accepts or refuses cleanly, and a tokenizer that survives any input.
TEST(HfTokenizerJsonFuzzTest, FlipsAndTruncations) {
  std::mt19937_64 rng(3);
  int parsed = 0;
  for (const std::string& base : {ByteLevelJson().dump(), SentencePieceJson().dump()}) {
    for (int i = 0; i < 400; ++i) {
      std::string s = base;
      const uint64_t r = rng();
      if (r & 1) {
        s = s.substr(0, (r >> 8) % s.size());
      } else {
        for (int k = 0; k < 1 + static_cast<int>((r >> 4) % 4); ++k) {
          s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        }
      }
      auto spec = ParseHfTokenizerJson("fz/tokenizer.json", s, "");
      if (!spec.ok()) {
        EXPECT_THAT(spec.status(),
                    StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fz/tokenizer.json")));
        continue;
      }
      ++parsed;
      auto tok = Tokenizer::Create(*spec);
      if (!tok.ok()) {
        EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
        continue;
      }
      std::string text;
      for (int k = 0; k < 64; ++k) text.push_back(static_cast<char>(rng()));
      text += "<s>hello</s> <|im_start|>he";
      for (bool special : {false, true}) {
        const std::vector<int32_t> ids = (*tok)->Encode(text, special);
        (void)(*tok)->Decode(ids, special);
      }
    }
  }
  std::printf("%d variants parsed\n", parsed);
}

}  // namespace
}  // namespace rsd
