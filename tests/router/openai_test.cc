// The OpenAI API's translation (router/openai.h), without a transport: what each request field
// becomes, what is refused and how, and the shapes of answers, chunks and errors. The official
// client against real processes is tests/cluster/openai_api_test.py.
#include "router/openai.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"

namespace rsd::router::openai {
namespace {

using ::nlohmann::json;
using ::rsd::testing::StatusIs;
using ::testing::HasSubstr;

json Chat(json extra = json::object()) {
  json j = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  for (auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

TEST(OpenAiParse, EveryFieldBecomesTheTurnsField) {
  absl::StatusOr<Request> r = ParseChat(
      Chat({{"messages",
             {{{"role", "developer"}, {"content", "be brief"}},
              {{"role", "user"},
               {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}},
              {{"role", "assistant"}, {"content", "c"}},
              {{"role", "user"}, {"content", "d"}}}},
            {"max_completion_tokens", 7},
            {"max_tokens", 9},
            {"temperature", 0.5},
            {"top_p", 0.9},
            {"seed", -1},
            {"stop", {"x", "y"}},
            {"stream", true},
            {"stream_options", {{"include_usage", true}}},
            {"user", "u"}}),
      "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_TRUE(r->session.empty());
  EXPECT_FALSE(r->keep_session);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->turn.message(), "d");
  ASSERT_EQ(r->turn.context_size(), 3);
  EXPECT_EQ(r->turn.context(0).role(), "system");  // OpenAI's newer name for it
  EXPECT_EQ(r->turn.context(1).content(), "ab");   // text parts joined
  EXPECT_EQ(r->turn.context(2).role(), "assistant");
  EXPECT_EQ(r->turn.max_tokens(), 7);  // max_completion_tokens wins over the older name
  EXPECT_FLOAT_EQ(r->turn.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(r->turn.sampling().top_p(), 0.9f);
  EXPECT_EQ(r->turn.sampling().seed(), ~uint64_t{0});  // -1 as its 64 bits
  EXPECT_THAT(r->turn.stop(), ::testing::ElementsAre("x", "y"));
}

TEST(OpenAiParse, ANamedSessionSendsOnlyTheLastMessage) {
  const json body = Chat({{"messages",
                           {{{"role", "user"}, {"content", "old"}},
                            {{"role", "assistant"}, {"content", "reply"}},
                            {{"role", "user"}, {"content", "new"}}}}});
  absl::StatusOr<Request> named = ParseChat(body, "0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(named.ok());
  EXPECT_TRUE(named->keep_session);
  EXPECT_EQ(named->turn.message(), "new");
  EXPECT_EQ(named->turn.context_size(), 0);
  absl::StatusOr<Request> opened = ParseChat(body, "new");
  ASSERT_TRUE(opened.ok());
  EXPECT_TRUE(opened->keep_session);
  EXPECT_EQ(opened->turn.context_size(), 2);
  json with_field = body;
  with_field["session"] = "new";
  EXPECT_EQ(ParseChat(with_field, "")->session, "new");
  EXPECT_EQ(ParseChat(with_field, "0123")->session, "0123");  // the header wins
}

TEST(OpenAiParse, WhatIsRefusedNamesTheField) {
  const auto refused = [](json extra, const std::string& what) {
    EXPECT_THAT(ParseChat(Chat(std::move(extra)), ""),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(what)));
  };
  refused({{"n", 2}}, "'n'");
  refused({{"temperature", 3}}, "'temperature'");
  refused({{"temperature", "hot"}}, "'temperature' must be a number");
  refused({{"top_p", 0}}, "'top_p'");
  refused({{"seed", 1.5}}, "'seed' must be an integer");
  refused({{"max_tokens", 2.5}}, "'max_tokens' must be an integer");
  refused({{"max_tokens", -1}}, "'max_tokens'");
  refused({{"stop", 3}}, "'stop'");
  refused({{"stop", {"a", 1}}}, "'stop'");
  refused({{"stream", "yes"}}, "'stream'");
  // libFuzzer's find: include_usage of another type threw out of the parser (a crash).
  refused({{"stream_options", {{"include_usage", json::array({1})}}}},
          "'stream_options.include_usage' must be true or false");
  refused({{"stream_options", "usage"}}, "'stream_options' must be an object");
  refused({{"model", 5}}, "'model'");
  refused({{"messages", json::array()}}, "'messages' must be a non-empty array");
  refused({{"messages", {{{"content", "no role"}}}}}, "needs a string 'role'");
  refused({{"messages", {{{"role", "assistant"}, {"content", "a"}}}}},
          "must be the user's message");
  refused({{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}},
          "only text is supported");
  EXPECT_THAT(ParseChat(json::array(), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JSON object")));
  EXPECT_THAT(ParseCompletion({{"prompt", {"a", "b"}}}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'prompt'")));
  absl::StatusOr<Request> raw = ParseCompletion({{"prompt", "p"}}, "");
  ASSERT_TRUE(raw.ok());
  EXPECT_TRUE(raw->turn.raw());
  EXPECT_EQ(raw->turn.message(), "p");
}

TEST(OpenAiErrors, StatusesBecomeOpenAisCodesAndShapes) {
  const struct {
    absl::Status status;
    int http;
    const char* type;
    int retry_after;
  } cases[] = {
      {absl::InvalidArgumentError("bad"), 400, "invalid_request_error", 0},
      {absl::FailedPreconditionError("full"), 400, "invalid_request_error", 0},
      {absl::NotFoundError("gone"), 404, "not_found_error", 0},
      {absl::UnauthenticatedError("who"), 401, "authentication_error", 0},
      {absl::AbortedError("busy"), 409, "conflict_error", 0},
      {absl::ResourceExhaustedError("queue"), 429, "rate_limit_error", 1},
      {absl::UnavailableError("down"), 503, "service_unavailable_error", 1},
      {absl::DeadlineExceededError("slow"), 504, "timeout_error", 0},
      {absl::InternalError("bug"), 500, "server_error", 0},
  };
  for (const auto& c : cases) {
    const Error e = ErrorOf(c.status);
    EXPECT_EQ(e.http_status, c.http) << c.status;
    EXPECT_EQ(e.retry_after_seconds, c.retry_after) << c.status;
    EXPECT_EQ(e.body["error"]["type"], c.type);
    EXPECT_EQ(e.body["error"]["message"], std::string(c.status.message()));
    EXPECT_TRUE(e.body["error"]["param"].is_null());
  }
}

TEST(OpenAiAnswers, UsageCountsTheHistoryAndReusedPrefixAsCachedPromptTokens) {
  v1::TurnDone done;
  done.set_finish_reason("eos");
  done.set_text("hello");
  done.mutable_usage()->set_prompt_tokens(10);
  done.mutable_usage()->set_completion_tokens(5);
  done.mutable_usage()->set_history_tokens(100);        // the log after the turn
  for (int i = 0; i < 17; ++i) done.add_log_tokens(i);  // 10 + 5 + 2 end-of-turn tokens
  const json usage = UsageOf(done);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 83);  // 100 - 17
  EXPECT_EQ(usage["prompt_tokens"], 93);
  EXPECT_EQ(usage["completion_tokens"], 5);
  EXPECT_EQ(usage["total_tokens"], 98);
  Answer a{"chatcmpl-1", 1700000000, "m", "", false};
  const json whole = Completion(a, done);
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "stop");  // eos is OpenAI's stop
  EXPECT_FALSE(whole.contains("session"));
  a.session = "abc";
  EXPECT_EQ(TextChunk(a, "he", true)["choices"][0]["delta"]["role"], "assistant");
  EXPECT_FALSE(TextChunk(a, "llo", false)["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(TextChunk(a, "llo", false)["session"], "abc");
  // Prompt tokens whose state another session computed (prefix reuse) are cached too; the prompt
  // total does not change.
  done.mutable_usage()->set_reused_tokens(6);
  EXPECT_EQ(UsageOf(done)["prompt_tokens_details"]["cached_tokens"], 89);
  EXPECT_EQ(UsageOf(done)["prompt_tokens"], 93);
  EXPECT_TRUE(UsageChunk(a, done)["choices"].empty());
  done.set_finish_reason("length");
  EXPECT_EQ(FinishChunk(a, done)["choices"][0]["finish_reason"], "length");
  a.raw = true;
  EXPECT_EQ(Completion(a, done)["object"], "text_completion");
  EXPECT_EQ(Completion(a, done)["choices"][0]["text"], "hello");
}

}  // namespace
}  // namespace rsd::router::openai
