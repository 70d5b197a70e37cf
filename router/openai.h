// The OpenAI-compatible front door's translation, without a transport: request JSON to the
// router core's calls, the core's events and statuses to OpenAI's JSON (chat.completion,
// chat.completion.chunk, text_completion, error). http_service.cc serves it over HTTP.
//
// Sessions: a request that names a server-side session (the `x-rsd-session` header or a
// "session" field) sends only its last message, which must be the user's; the session holds the
// rest. The value "new" opens a session for the request's whole `messages` and keeps it. Without
// either, a request is stateless: its messages open a session that is closed after the answer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "rsd/v1/client.pb.h"

namespace rsd::router::openai {

// A parsed /v1/chat/completions or /v1/completions request.
struct Request {
  std::string model;          // "" = the only model
  std::string session;        // "" stateless, "new", or a session id
  bool keep_session = false;  // the session outlives the request ("new" or a named one)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool raw = false;            // /v1/completions: a raw prompt, no chat template
  v1::TurnRequest turn;        // message, context, sampling, max_tokens, stop
};

// INVALID_ARGUMENT naming the field for anything OpenAI's API would refuse or we do not support
// (n != 1, a non-text content part, a bad role order, a stop list longer than 4 or 16 entries...).
// `header_session` is the x-rsd-session header ("" if absent).
absl::StatusOr<Request> ParseChat(const nlohmann::json& body, const std::string& header_session);
absl::StatusOr<Request> ParseCompletion(const nlohmann::json& body,
                                        const std::string& header_session);

// An OpenAI error: the HTTP status and the body {"error": {message, type, param, code}}.
struct Error {
  int http_status = 500;
  nlohmann::json body;
  int retry_after_seconds = 0;  // 429 and 503: the Retry-After header
};
Error ErrorOf(const absl::Status& status);

// What a finished turn answers with. `created` is Unix seconds; `id` the response id.
struct Answer {
  std::string id;
  int64_t created = 0;
  std::string model;
  std::string session;  // set when the session is kept
  bool raw = false;
};
// OpenAI's finish_reason for ours ("eos" and "stop" are "stop", "length" stays).
std::string FinishReason(const std::string& ours);
// OpenAI usage from ours: prompt_tokens counts the history the model read (cached_tokens) plus
// what the request added.
nlohmann::json UsageOf(const v1::TurnDone& done);
// The non-streaming body: chat.completion or text_completion.
nlohmann::json Completion(const Answer& a, const v1::TurnDone& done);
// One streamed chunk carrying `text` (the first also carries the role), a final chunk with the
// finish reason, and the usage chunk (choices empty).
nlohmann::json TextChunk(const Answer& a, const std::string& text, bool first);
nlohmann::json FinishChunk(const Answer& a, const v1::TurnDone& done);
nlohmann::json UsageChunk(const Answer& a, const v1::TurnDone& done);
// GET /v1/models.
nlohmann::json Models(const std::vector<std::string>& names);

}  // namespace rsd::router::openai
