#include "tools/bench/serving_clients.h"

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "rsd/v1/client.grpc.pb.h"
#include "rsd/v1/worker.grpc.pb.h"

namespace rsd::bench {
namespace {

rsd::v1::TurnRequest MakeTurn(const std::string& message, int max_tokens, Sampling sampling) {
  rsd::v1::TurnRequest req;
  req.set_message(message);
  req.set_max_tokens(max_tokens);
  rsd::v1::SamplingParams* s = req.mutable_sampling();
  s->set_temperature(static_cast<float>(sampling.temperature));
  if (sampling.temperature > 0) {
    s->set_top_p(static_cast<float>(sampling.top_p));
    s->set_seed(1);
  }
  return req;
}

// Reads a Chat stream (the router's and a worker's carry the same events) into `t`.
void ReadChat(grpc::ClientReader<rsd::v1::ChatEvent>& reader, TurnTrace& t) {
  rsd::v1::ChatEvent ev;
  while (reader.Read(&ev)) {
    if (ev.has_delta() && ev.delta().tokens_size() > 0) {
      t.events.emplace_back(Clock::now(), ev.delta().tokens_size());
    } else if (ev.has_done()) {
      t.tokens = ev.done().usage().completion_tokens();
      t.finish = ev.done().finish_reason();
    }
  }
  grpc::Status s = reader.Finish();
  if (!s.ok()) t.error = absl::StrCat("Chat: ", s.error_message());
  if (s.ok() && t.finish.empty()) t.error = "Chat: no TurnDone";
}

std::chrono::system_clock::time_point Deadline(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// One streamed Chat call on a router's or a worker's stub, timed from the moment it is sent.
template <class Stub, class Request>
TurnTrace TimedChat(Stub& stub, const Request& req, double timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(timeout));
  TurnTrace t;
  t.sent = Clock::now();
  ReadChat(*stub.Chat(&ctx, req), t);
  return t;
}

// Our router: rsd.v1.Client (CreateSession, then Chat streaming).
class RsdClient : public ChatClient {
 public:
  RsdClient(std::shared_ptr<grpc::Channel> channel, double timeout, Sampling sampling)
      : stub_(rsd::v1::Client::NewStub(std::move(channel))),
        timeout_(timeout),
        sampling_(sampling) {}

  std::string Open() override {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(60));
    rsd::v1::SessionInfo info;
    grpc::Status s = stub_->CreateSession(&ctx, rsd::v1::CreateSessionRequest(), &info);
    if (!s.ok()) return absl::StrCat("CreateSession: ", s.error_message());
    session_ = info.session_id();
    return "";
  }

  TurnTrace Turn(const std::string& message, int max_tokens) override {
    rsd::v1::TurnRequest req = MakeTurn(message, max_tokens, sampling_);
    req.set_session_id(session_);
    return TimedChat(*stub_, req, timeout_);
  }

 private:
  std::unique_ptr<rsd::v1::Client::Stub> stub_;
  double timeout_;
  Sampling sampling_;
  std::string session_;
};

// A worker's own Worker service, no router in between: a session of its own (a random id, the
// default tenant, no epoch check), then Chat streaming — the same turns as through the router.
class RsdWorkerClient : public ChatClient {
 public:
  RsdWorkerClient(std::shared_ptr<grpc::Channel> channel, double timeout, Sampling sampling)
      : stub_(rsd::v1::Worker::NewStub(std::move(channel))),
        timeout_(timeout),
        sampling_(sampling) {}

  std::string Open() override {
    std::random_device rd;
    std::string id;
    for (int i = 0; i < 4; ++i) id += absl::StrCat(absl::Hex(rd(), absl::kZeroPad8));
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(60));
    rsd::v1::OpenSessionRequest req;
    req.mutable_ref()->set_session_id(id);
    rsd::v1::SessionInfo info;
    grpc::Status s = stub_->OpenSession(&ctx, req, &info);
    if (!s.ok()) return absl::StrCat("OpenSession: ", s.error_message());
    ref_ = req.ref();
    return "";
  }

  TurnTrace Turn(const std::string& message, int max_tokens) override {
    rsd::v1::WorkerChatRequest req;
    *req.mutable_ref() = ref_;
    *req.mutable_turn() = MakeTurn(message, max_tokens, sampling_);
    req.mutable_turn()->set_session_id(ref_.session_id());
    return TimedChat(*stub_, req, timeout_);
  }

 private:
  std::unique_ptr<rsd::v1::Worker::Stub> stub_;
  double timeout_;
  Sampling sampling_;
  rsd::v1::SessionRef ref_;
};

// What one streamed llama-server turn has said so far, fed one server-sent-events line at a time.
struct LlamaStream {
  TurnTrace trace;
  std::string reply;           // the assistant's text
  int64_t content_events = 0;  // chunks that carried text

  void OnLine(const std::string& line) {
    if (line.rfind("data: ", 0) != 0 || line == "data: [DONE]") return;
    nlohmann::json j = nlohmann::json::parse(line.substr(6), nullptr, false);
    if (j.is_discarded()) return;
    if (j.contains("usage") && j["usage"].is_object()) {
      trace.tokens = j["usage"].value("completion_tokens", int64_t{0});
    }
    if (!j.contains("choices") || j["choices"].empty()) return;
    const auto& c = j["choices"][0];
    if (c.contains("finish_reason") && c["finish_reason"].is_string()) {
      trace.finish = c["finish_reason"].get<std::string>();
    }
    if (c.contains("delta") && c["delta"].contains("content") &&
        c["delta"]["content"].is_string()) {
      std::string piece = c["delta"]["content"].get<std::string>();
      if (!piece.empty()) {
        trace.events.emplace_back(Clock::now(), 1);
        content_events++;
        reply += piece;
      }
    }
  }
};

// A streamed chat request; the sampling as llama-server's sampler chain reads it (greedy:
// top_k 1).
nlohmann::json RequestBody(const nlohmann::json& messages, int max_tokens, Sampling sampling) {
  nlohmann::json body = nlohmann::json::parse(
      R"({"stream": true, "ignore_eos": true, "cache_prompt": true, "seed": 1,
          "stream_options": {"include_usage": true}})");
  body["messages"] = messages;
  body["max_tokens"] = max_tokens;
  const double t = sampling.temperature;
  body["temperature"] = t > 0 ? t : 0.0;
  body["top_k"] = t > 0 ? 0 : 1;
  if (t > 0) body.update({{"top_p", sampling.top_p}, {"min_p", 0}});
  return body;
}

// OpenAI-style chat over HTTP: llama-server (the client keeps the history and resends it;
// llama-server reuses its slot's cache), or our router's HTTP front door with a server-side
// session (`server_session`: only the new message travels, x-rsd-session names the session).

class LlamaClient : public ChatClient {
 public:
  LlamaClient(const std::string& target, double timeout, Sampling sampling, bool server_session)
      : http_(target), sampling_(sampling), server_session_(server_session) {
    // A fresh loopback connection per turn (~0.1 ms inside TTFT): llama-server's HTTP layer drops
    // kept-alive connections that sat through a long turn, and a retry could submit twice.
    http_.set_keep_alive(false);
    http_.set_read_timeout(static_cast<time_t>(timeout), 0);
    http_.set_write_timeout(60, 0);
  }

  std::string Open() override { return ""; }  // the session is the history this client keeps

  TurnTrace Turn(const std::string& message, int max_tokens) override {
    history_.push_back({{"role", "user"}, {"content", message}});
    const nlohmann::json sent =
        server_session_ ? nlohmann::json::array({history_.back()}) : history_;
    const nlohmann::json body = RequestBody(sent, max_tokens, sampling_);
    LlamaStream stream;
    TurnTrace& t = stream.trace;
    std::string buffer;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.set_header("Content-Type", "application/json");
    if (server_session_) req.set_header("x-rsd-session", session_.empty() ? "new" : session_);
    req.body = body.dump();
    int http_status = 0;
    req.response_handler = [&](const httplib::Response& r) {
      http_status = r.status;
      if (server_session_ && r.has_header("x-rsd-session")) {
        session_ = r.get_header_value("x-rsd-session");
      }
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      buffer.append(data, n);
      size_t eol;
      while ((eol = buffer.find('\n')) != std::string::npos) {
        std::string line = buffer.substr(0, eol);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        buffer.erase(0, eol + 1);
        stream.OnLine(line);
      }
      return true;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    t.sent = Clock::now();
    if (!http_.send(req, res, err)) {
      t.error = absl::StrCat("POST: ", httplib::to_string(err));
    } else if (http_status != 200) {
      t.error = absl::StrCat("POST: HTTP ", http_status, " ", res.body);
    }
    // A chunk may carry more than one token (an incomplete UTF-8 character is held back);
    // usage says how many were generated.
    if (t.tokens == 0) t.tokens = stream.content_events;
    history_.push_back({{"role", "assistant"}, {"content", stream.reply}});
    return t;
  }

 private:
  httplib::Client http_;
  const Sampling sampling_;
  const bool server_session_;
  std::string session_;  // server_session_: the router's session id after the first turn
  nlohmann::json history_ = nlohmann::json::array();
};

}  // namespace

std::unique_ptr<ChatClient> MakeClient(const std::string& system, const std::string& target,
                                       double timeout, Sampling sampling) {
  if (system == "llama") return std::make_unique<LlamaClient>(target, timeout, sampling, false);
  if (system == "rsd-http") return std::make_unique<LlamaClient>(target, timeout, sampling, true);
  if (system != "rsd" && system != "rsd-worker") return nullptr;
  // One channel per session, as separate clients would have (no shared HTTP/2 connection).
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (system == "rsd") return std::make_unique<RsdClient>(std::move(channel), timeout, sampling);
  return std::make_unique<RsdWorkerClient>(std::move(channel), timeout, sampling);
}

}  // namespace rsd::bench
