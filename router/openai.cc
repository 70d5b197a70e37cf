#include "router/openai.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"

namespace rsd::router::openai {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("'", field, "' ", what));
}

// stream_options.include_usage (false when absent): an object's boolean, or INVALID_ARGUMENT
// naming the field.
absl::StatusOr<bool> IncludeUsage(const json& body) {
  if (!body.contains("stream_options") || body["stream_options"].is_null()) return false;
  const json& options = body["stream_options"];
  if (!options.is_object()) return Invalid("stream_options", "must be an object");
  if (options.contains("include_usage") && !options["include_usage"].is_boolean()) {
    return Invalid("stream_options.include_usage", "must be true or false");
  }
  return options.value("include_usage", false);
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined).
absl::StatusOr<std::string> ContentOf(const json& m, size_t i) {
  const std::string field = absl::StrCat("messages[", i, "].content");
  if (!m.contains("content") || m["content"].is_null()) return std::string();
  const json& c = m["content"];
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) return Invalid(field, "must be a string or an array of text parts");
  std::string out;
  for (const json& part : c) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      return Invalid(field,
                     "has a part that is not {\"type\": \"text\", \"text\": ...} (only "
                     "text is supported)");
    }
    out += part["text"].get<std::string>();
  }
  return out;
}

absl::StatusOr<std::optional<double>> Number(const json& body, const char* key, double lo,
                                             double hi) {
  if (!body.contains(key) || body[key].is_null()) return std::optional<double>();
  if (!body[key].is_number()) return Invalid(key, "must be a number");
  const double v = body[key].get<double>();
  if (!(v >= lo && v <= hi)) {
    return Invalid(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  }
  return std::optional<double>(v);
}

// The fields /v1/chat/completions and /v1/completions share: model, sampling, max tokens, stop,
// n, stream, user, session.
absl::Status ParseCommon(const json& body, const std::string& header_session, Request* r) {
  if (body.contains("model") && !body["model"].is_string()) return Invalid("model", "not a string");
  r->model = body.value("model", "");
  RSD_ASSIGN_OR_RETURN(std::optional<double> n, Number(body, "n", 1, 1e9));
  if (n && *n != 1) return Invalid("n", "must be 1 (one choice per request)");
  RSD_ASSIGN_OR_RETURN(std::optional<double> t, Number(body, "temperature", 0, 2));
  if (t) r->turn.mutable_sampling()->set_temperature(static_cast<float>(*t));
  RSD_ASSIGN_OR_RETURN(std::optional<double> p, Number(body, "top_p", 0, 1));
  if (p) {
    if (*p == 0) return Invalid("top_p", "must be greater than 0");
    r->turn.mutable_sampling()->set_top_p(static_cast<float>(*p));
  }
  if (body.contains("seed") && !body["seed"].is_null()) {
    // Any 64-bit integer (OpenAI's seed is signed): the same value always draws the same tokens.
    const json& seed = body["seed"];
    if (seed.is_number_unsigned()) {
      r->turn.mutable_sampling()->set_seed(seed.get<uint64_t>());
    } else if (seed.is_number_integer()) {
      r->turn.mutable_sampling()->set_seed(static_cast<uint64_t>(seed.get<int64_t>()));
    } else {
      return Invalid("seed", "must be an integer");
    }
  }
  for (const char* key : {"max_completion_tokens", "max_tokens"}) {
    RSD_ASSIGN_OR_RETURN(std::optional<double> m, Number(body, key, 0, 1 << 30));
    if (m && std::floor(*m) != *m) return Invalid(key, "must be an integer");
    if (m) r->turn.set_max_tokens(static_cast<int32_t>(*m));
    if (m) break;
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& s = body["stop"];
    if (s.is_string()) {
      r->turn.add_stop(s.get<std::string>());
    } else if (s.is_array()) {
      for (const json& e : s) {
        if (!e.is_string()) return Invalid("stop", "must be a string or an array of strings");
        r->turn.add_stop(e.get<std::string>());
      }
    } else {
      return Invalid("stop", "must be a string or an array of strings");
    }
  }
  if (body.contains("stream") && !body["stream"].is_boolean()) {
    return Invalid("stream", "must be true or false");
  }
  r->stream = body.value("stream", false);
  RSD_ASSIGN_OR_RETURN(r->include_usage, IncludeUsage(body));
  if (body.contains("user") && !body["user"].is_string()) return Invalid("user", "not a string");
  if (body.contains("session") && !body["session"].is_string()) {
    return Invalid("session", "must be a session id or \"new\"");
  }
  r->session = !header_session.empty() ? header_session : body.value("session", "");
  r->keep_session = !r->session.empty();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Request> ParseChat(const json& body, const std::string& header_session) {
  if (!body.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  Request r;
  RSD_RETURN_IF_ERROR(ParseCommon(body, header_session, &r));
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
    return Invalid("messages", "must be a non-empty array");
  }
  const json& msgs = body["messages"];
  std::vector<v1::ChatMessage> all;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const json& m = msgs[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Invalid(absl::StrCat("messages[", i, "]"), "needs a string 'role'");
    }
    RSD_ASSIGN_OR_RETURN(std::string content, ContentOf(m, i));
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for it
    v1::ChatMessage out;
    out.set_role(role);
    out.set_content(std::move(content));
    all.push_back(std::move(out));
  }
  if (all.back().role() != "user") {
    return Invalid(absl::StrCat("messages[", all.size() - 1, "]"),
                   "must be the user's message (the one to answer)");
  }
  r.turn.set_message(all.back().content());
  all.pop_back();
  // A named session already holds the history: only the new message travels.
  if (r.session.empty() || r.session == "new") {
    for (v1::ChatMessage& m : all) *r.turn.add_context() = std::move(m);
  }
  return r;
}

absl::StatusOr<Request> ParseCompletion(const json& body, const std::string& header_session) {
  if (!body.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  Request r;
  RSD_RETURN_IF_ERROR(ParseCommon(body, header_session, &r));
  r.raw = true;
  r.turn.set_raw(true);
  if (!body.contains("prompt") || !body["prompt"].is_string()) {
    return Invalid("prompt", "must be a string (one prompt per request)");
  }
  r.turn.set_message(body["prompt"].get<std::string>());
  if (body.contains("echo") && body["echo"].is_boolean() && body["echo"].get<bool>()) {
    return Invalid("echo", "is not supported");
  }
  return r;
}

Error ErrorOf(const absl::Status& status) {
  Error e;
  std::string type = "server_error";
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      e.http_status = 400;
      type = "invalid_request_error";
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      type = "authentication_error";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.http_status = 403;
      type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      type = "not_found_error";
      break;
    case absl::StatusCode::kAborted:
      e.http_status = 409;
      type = "conflict_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      type = "rate_limit_error";
      e.retry_after_seconds = 1;
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      type = "service_unavailable_error";
      e.retry_after_seconds = 1;
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http_status = 504;
      type = "timeout_error";
      break;
    case absl::StatusCode::kCancelled:
      e.http_status = 499;
      type = "cancelled";
      break;
    default:
      e.http_status = 500;
      break;
  }
  e.body = {{"error",
             {{"message", std::string(status.message())},
              {"type", type},
              {"param", nullptr},
              {"code", absl::StatusCodeToString(status.code())}}}};
  return e;
}

std::string FinishReason(const std::string& ours) { return ours == "length" ? "length" : "stop"; }

json UsageOf(const v1::TurnDone& done) {
  const v1::Usage& u = done.usage();
  const int64_t added = done.log_tokens_size();
  // History the model read before this request (0 for a new session), and prompt tokens whose
  // state came from another session (prefix reuse): neither was computed for this request.
  const int64_t history = added > 0 ? std::max<int64_t>(0, u.history_tokens() - added) : 0;
  const int64_t cached = history + u.reused_tokens();
  return {{"prompt_tokens", history + u.prompt_tokens()},
          {"completion_tokens", u.completion_tokens()},
          {"total_tokens", history + u.prompt_tokens() + u.completion_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

namespace {

json Envelope(const Answer& a, const char* object) {
  json j = {{"id", a.id}, {"object", object}, {"created", a.created}, {"model", a.model}};
  if (!a.session.empty()) j["session"] = a.session;
  return j;
}

}  // namespace

json Completion(const Answer& a, const v1::TurnDone& done) {
  json j = Envelope(a, a.raw ? "text_completion" : "chat.completion");
  json choice = {{"index", 0}, {"finish_reason", FinishReason(done.finish_reason())}};
  if (a.raw) {
    choice["text"] = done.text();
    choice["logprobs"] = nullptr;
  } else {
    choice["message"] = {{"role", "assistant"}, {"content", done.text()}};
  }
  j["choices"] = json::array({choice});
  j["usage"] = UsageOf(done);
  return j;
}

json TextChunk(const Answer& a, const std::string& text, bool first) {
  json j = Envelope(a, a.raw ? "text_completion" : "chat.completion.chunk");
  json choice = {{"index", 0}, {"finish_reason", nullptr}};
  if (a.raw) {
    choice["text"] = text;
  } else {
    choice["delta"] =
        first ? json{{"role", "assistant"}, {"content", text}} : json{{"content", text}};
  }
  j["choices"] = json::array({choice});
  return j;
}

json FinishChunk(const Answer& a, const v1::TurnDone& done) {
  json j = Envelope(a, a.raw ? "text_completion" : "chat.completion.chunk");
  json choice = {{"index", 0}, {"finish_reason", FinishReason(done.finish_reason())}};
  if (a.raw) {
    choice["text"] = "";
  } else {
    choice["delta"] = json::object();
  }
  j["choices"] = json::array({choice});
  return j;
}

json UsageChunk(const Answer& a, const v1::TurnDone& done) {
  json j = Envelope(a, a.raw ? "text_completion" : "chat.completion.chunk");
  j["choices"] = json::array();
  j["usage"] = UsageOf(done);
  return j;
}

json Models(const std::vector<std::string>& names) {
  json data = json::array();
  for (const std::string& n : names) {
    data.push_back({{"id", n}, {"object", "model"}, {"created", 0}, {"owned_by", "residuum"}});
  }
  return {{"object", "list"}, {"data", data}};
}

}  // namespace rsd::router::openai
