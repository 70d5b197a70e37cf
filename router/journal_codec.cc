// CBOR encodings of the journal's records. Text fields that may hold arbitrary bytes (user
// messages, generated text, stop strings) are stored as CBOR byte strings, so a record never
// depends on its text being valid UTF-8.
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "router/journal.h"

namespace rsd::router {
namespace {

using nlohmann::json;

constexpr int kSessionVersion = 1;
constexpr int kTurnVersion = 1;
constexpr int kPendingVersion = 1;

json Bytes(const std::string& s) {
  return json::binary(std::vector<uint8_t>(s.begin(), s.end()));
}

std::string FromBytes(const json& j) {
  const auto& b = j.get_binary();
  return std::string(b.begin(), b.end());
}

}  // namespace

std::string EncodeSessionRecord(const SessionRecord& s) {
  json j = {{"v", kSessionVersion},
            {"id", Bytes(std::string(s.id.AsStringView()))},
            {"tenant", Bytes(s.tenant)},
            {"model", Bytes(s.model)},
            {"worker", Bytes(s.worker)},
            {"epoch", s.epoch},
            {"ttl", s.ttl_seconds},
            {"pin", s.pin},
            {"priority", s.priority},
            {"created_ms", s.created_unix_ms},
            {"model_fp", Bytes(s.model_fingerprint)}};
  std::vector<uint8_t> out = json::to_cbor(j);
  return std::string(out.begin(), out.end());
}

absl::StatusOr<SessionRecord> DecodeSessionRecord(const std::string& bytes,
                                                  const std::string& what) {
  try {
    json j = json::from_cbor(bytes);
    if (j.at("v").get<int>() != kSessionVersion) {
      return absl::DataLossError(
          absl::StrCat(what, ": record version ", j.at("v").get<int>(), ", want ", kSessionVersion));
    }
    SessionRecord s;
    std::string id = FromBytes(j.at("id"));
    if (id.size() != SessionId::kSize) {
      return absl::DataLossError(absl::StrCat(what, ": session id of ", id.size(), " bytes"));
    }
    s.id = SessionId::FromBytes({reinterpret_cast<const uint8_t*>(id.data()), id.size()});
    s.tenant = FromBytes(j.at("tenant"));
    s.model = FromBytes(j.at("model"));
    s.worker = FromBytes(j.at("worker"));
    s.epoch = j.at("epoch").get<uint64_t>();
    s.ttl_seconds = j.at("ttl").get<uint32_t>();
    s.pin = j.at("pin").get<bool>();
    s.priority = j.at("priority").get<int32_t>();
    s.created_unix_ms = j.at("created_ms").get<int64_t>();
    if (j.contains("model_fp")) s.model_fingerprint = FromBytes(j.at("model_fp"));
    return s;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(what, ": malformed session record: ", e.what()));
  }
}

std::string EncodeTurnRecord(const TurnRecord& t) {
  json stop = json::array();
  for (const std::string& s : t.stop) stop.push_back(Bytes(s));
  json j = {{"v", kTurnVersion},
            {"turn", t.turn},
            {"turn_id", Bytes(t.turn_id)},
            {"message", Bytes(t.message)},
            {"seed", t.seed},
            {"temperature", t.temperature},
            {"top_k", t.top_k},
            {"stop", std::move(stop)},
            {"tokens", t.tokens},
            {"text", Bytes(t.text)},
            {"finish_reason", Bytes(t.finish_reason)},
            {"prompt_tokens", t.prompt_tokens},
            {"completion_tokens", t.completion_tokens},
            {"history_tokens", t.history_tokens},
            {"worker", Bytes(t.worker)},
            {"committed_ms", t.committed_unix_ms},
            {"log_tokens", t.log_tokens}};
  if (t.top_p.has_value()) j["top_p"] = *t.top_p;
  if (t.max_tokens.has_value()) j["max_tokens"] = *t.max_tokens;
  if (t.reused_tokens != 0) j["reused_tokens"] = t.reused_tokens;
  std::vector<uint8_t> out = json::to_cbor(j);
  return std::string(out.begin(), out.end());
}

absl::StatusOr<TurnRecord> DecodeTurnRecord(const std::string& bytes, const std::string& what) {
  try {
    json j = json::from_cbor(bytes);
    if (j.at("v").get<int>() != kTurnVersion) {
      return absl::DataLossError(
          absl::StrCat(what, ": record version ", j.at("v").get<int>(), ", want ", kTurnVersion));
    }
    TurnRecord t;
    t.turn = j.at("turn").get<uint32_t>();
    t.turn_id = FromBytes(j.at("turn_id"));
    t.message = FromBytes(j.at("message"));
    t.seed = j.at("seed").get<uint64_t>();
    t.temperature = j.at("temperature").get<float>();
    t.top_k = j.at("top_k").get<int32_t>();
    if (j.contains("top_p")) t.top_p = j.at("top_p").get<float>();
    if (j.contains("max_tokens")) t.max_tokens = j.at("max_tokens").get<int32_t>();
    for (const json& s : j.at("stop")) t.stop.push_back(FromBytes(s));
    t.tokens = j.at("tokens").get<std::vector<int32_t>>();
    t.text = FromBytes(j.at("text"));
    t.finish_reason = FromBytes(j.at("finish_reason"));
    t.prompt_tokens = j.at("prompt_tokens").get<int64_t>();
    t.completion_tokens = j.at("completion_tokens").get<int64_t>();
    t.history_tokens = j.at("history_tokens").get<int64_t>();
    t.worker = FromBytes(j.at("worker"));
    t.committed_unix_ms = j.at("committed_ms").get<int64_t>();
    if (j.contains("log_tokens")) t.log_tokens = j.at("log_tokens").get<std::vector<int32_t>>();
    if (j.contains("reused_tokens")) t.reused_tokens = j.at("reused_tokens").get<int64_t>();
    return t;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(what, ": malformed turn record: ", e.what()));
  }
}

std::string EncodePendingTurn(const PendingRecord& p) {
  json stop = json::array();
  for (const std::string& s : p.stop) stop.push_back(Bytes(s));
  json j = {{"v", kPendingVersion},
            {"turn_id", Bytes(p.turn_id)},
            {"message", Bytes(p.message)},
            {"seed", p.seed},
            {"temperature", p.temperature},
            {"top_k", p.top_k},
            {"stop", std::move(stop)},
            {"started_ms", p.started_unix_ms}};
  if (p.top_p.has_value()) j["top_p"] = *p.top_p;
  if (p.max_tokens.has_value()) j["max_tokens"] = *p.max_tokens;
  std::vector<uint8_t> out = json::to_cbor(j);
  return std::string(out.begin(), out.end());
}

absl::StatusOr<PendingRecord> DecodePendingTurn(const std::string& bytes, const std::string& what) {
  try {
    json j = json::from_cbor(bytes);
    if (j.at("v").get<int>() != kPendingVersion) {
      return absl::DataLossError(absl::StrCat(what, ": record version ", j.at("v").get<int>(),
                                              ", want ", kPendingVersion));
    }
    PendingRecord p;
    p.turn_id = FromBytes(j.at("turn_id"));
    p.message = FromBytes(j.at("message"));
    p.seed = j.at("seed").get<uint64_t>();
    p.temperature = j.at("temperature").get<float>();
    p.top_k = j.at("top_k").get<int32_t>();
    if (j.contains("top_p")) p.top_p = j.at("top_p").get<float>();
    if (j.contains("max_tokens")) p.max_tokens = j.at("max_tokens").get<int32_t>();
    for (const json& s : j.at("stop")) p.stop.push_back(FromBytes(s));
    p.started_unix_ms = j.at("started_ms").get<int64_t>();
    return p;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(what, ": malformed pending turn: ", e.what()));
  }
}

}  // namespace rsd::router
