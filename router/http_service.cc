#include "router/http_service.h"

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "router/openai.h"
#include "storage/common/ids.h"
#include "storage/common/log.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

using nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendError(httplib::Response& res, const absl::Status& s) {
  const openai::Error e = openai::ErrorOf(s);
  res.status = e.http_status;
  if (e.retry_after_seconds > 0) {
    res.set_header("Retry-After", std::to_string(e.retry_after_seconds));
  }
  res.set_content(Dump(e.body), "application/json");
}

absl::StatusOr<Caller> CallerOf(const Gatekeeper& gate, const httplib::Request& req) {
  RSD_ASSIGN_OR_RETURN(const Principal who, gate.Client(req.get_header_value("authorization"),
                                                        req.get_header_value("x-rsd-tenant")));
  Caller c;
  c.tenant = who.tenant;
  return c;
}

// The events of one turn run on its own thread, so that the HTTP status can wait for the first
// of them (an error before any output is an HTTP error) while the rest streams. At most
// kPipeEvents wait for a slow client: then the turn's writes block, the worker's bounded stream
// fills and only that session pauses, as on gRPC.
constexpr size_t kPipeEvents = 64;
struct TurnPipe {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<v1::ChatEvent> events;
  bool finished = false;
  absl::Status status;
  std::atomic<bool> client_gone{false};
  std::thread runner;
};

// A request's session: opened for it (stateless or "new") or named; closed at the end if
// stateless.
struct SessionUse {
  std::string id;
  std::string model;
  bool close_after = false;
};

absl::StatusOr<SessionUse> OpenFor(RouterCore& core, const Caller& caller,
                                   const openai::Request& r) {
  SessionUse use;
  if (!r.session.empty() && r.session != "new") {
    // From the journal alone (the turn itself reaches the owner): no extra worker call.
    RSD_ASSIGN_OR_RETURN(SessionRecord rec, core.LoadSession(r.session, &caller.tenant));
    use.id = rec.id.ToHex();
    use.model = rec.model;
    return use;
  }
  if (!r.model.empty()) {
    bool known = false;
    for (const ModelSummary& m : core.registry().Models()) known = known || m.name == r.model;
    if (!known) {
      return absl::NotFoundError(absl::StrCat("the model '", r.model.substr(0, 128),
                                              "' does not exist (GET /v1/models lists them)"));
    }
  }
  v1::CreateSessionRequest create;
  create.set_model(r.model);
  // Its first turn is known: placement can go where its prompt's state already is.
  v1::TurnRequest* first = create.mutable_first_turn();
  first->set_message(r.turn.message());
  first->set_raw(r.turn.raw());
  *first->mutable_context() = r.turn.context();
  RSD_ASSIGN_OR_RETURN(v1::SessionInfo info, core.CreateSession(caller, create));
  use.id = info.session_id();
  use.model = info.model();
  use.close_after = r.session.empty();
  return use;
}

void CloseIfStateless(RouterCore& core, const Caller& caller, const SessionUse& use) {
  if (!use.close_after) return;
  absl::Status s = core.CloseSession(caller, use.id);
  if (!s.ok()) {
    log::Warn("closing a stateless request's session failed",
              {{"session", use.id}, {"error", s.ToString()}});
  }
}

openai::Answer AnswerFor(const openai::Request& r, const SessionUse& use) {
  openai::Answer a;
  a.id = absl::StrCat(r.raw ? "cmpl-" : "chatcmpl-", SessionId::Random().ToHex());
  a.created = absl::ToUnixSeconds(absl::Now());
  a.model = use.model;
  a.raw = r.raw;
  if (!use.close_after) a.session = use.id;
  return a;
}

// The turn answered in one body. Its outcome.
absl::Status Whole(RouterCore& core, const Caller& caller, const openai::Request& r,
                   const SessionUse& use, httplib::Response& res) {
  v1::ChatEvent last;
  absl::Status s = core.Chat(caller, r.turn, [&](const v1::ChatEvent& ev) {
    if (ev.has_done()) last = ev;
    return true;
  });
  CloseIfStateless(core, caller, use);
  if (!s.ok()) return s;
  if (!use.close_after) res.set_header("x-rsd-session", use.id);
  res.set_content(Dump(openai::Completion(AnswerFor(r, use), last.done())), "application/json");
  return absl::OkStatus();
}

std::string Event(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

// Runs the turn on its own thread, its events into `pipe` (blocking while kPipeEvents wait).
void StartTurn(RouterCore& core, const Caller& caller, const v1::TurnRequest& turn,
               const std::shared_ptr<TurnPipe>& pipe) {
  pipe->runner = std::thread([&core, caller, turn, pipe] {
    absl::Status s = core.Chat(caller, turn, [&pipe](const v1::ChatEvent& ev) {
      std::unique_lock<std::mutex> lock(pipe->mu);
      pipe->cv.wait(lock,
                    [&] { return pipe->events.size() < kPipeEvents || pipe->client_gone.load(); });
      pipe->events.push_back(ev);
      pipe->cv.notify_all();
      return !pipe->client_gone.load();
    });
    std::lock_guard<std::mutex> lock(pipe->mu);
    pipe->finished = true;
    pipe->status = s;
    pipe->cv.notify_all();
  });
}

// Writes the pipe's events to `sink` as SSE until the turn ends ([DONE], or an error event);
// false if the client went away (the turn is then cancelled).
bool WriteEvents(TurnPipe& pipe, const openai::Answer& answer, bool usage, bool& first,
                 httplib::DataSink& sink) {
  for (;;) {
    std::unique_lock<std::mutex> lock(pipe.mu);
    pipe.cv.wait(lock, [&] { return pipe.finished || !pipe.events.empty(); });
    if (pipe.events.empty()) break;
    v1::ChatEvent ev = std::move(pipe.events.front());
    pipe.events.pop_front();
    pipe.cv.notify_all();  // room for the turn's next event
    lock.unlock();
    std::string out;
    if (ev.has_delta() && !ev.delta().text().empty()) {
      out = Event(openai::TextChunk(answer, ev.delta().text(), first));
      first = false;
    } else if (ev.has_done()) {
      out = Event(openai::FinishChunk(answer, ev.done()));
      if (usage) out += Event(openai::UsageChunk(answer, ev.done()));
    }
    if (!out.empty() && !sink.write(out.data(), out.size())) {
      pipe.client_gone = true;
      return false;
    }
  }
  const std::string tail =
      pipe.status.ok() ? "data: [DONE]\n\n" : Event(openai::ErrorOf(pipe.status).body);
  sink.write(tail.data(), tail.size());
  sink.done();
  return true;
}

// The turn as Server-Sent Events. An error before the first event, or OK once streaming began.
absl::Status Streamed(RouterCore& core, const Caller& base, const openai::Request& r,
                      const SessionUse& use, httplib::Response& res) {
  auto pipe = std::make_shared<TurnPipe>();
  Caller caller = base;
  caller.cancelled = [pipe] { return pipe->client_gone.load(); };
  StartTurn(core, caller, r.turn, pipe);
  {
    std::unique_lock<std::mutex> lock(pipe->mu);
    pipe->cv.wait(lock, [&] { return pipe->finished || !pipe->events.empty(); });
    if (pipe->events.empty()) {  // refused before any output: an HTTP error
      lock.unlock();
      pipe->runner.join();
      CloseIfStateless(core, caller, use);
      return pipe->status;
    }
  }
  if (!use.close_after) res.set_header("x-rsd-session", use.id);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [pipe, answer = AnswerFor(r, use), usage = r.include_usage, first = true](
          size_t, httplib::DataSink& sink) mutable {
        return WriteEvents(*pipe, answer, usage, first, sink);
      },
      [pipe, &core, caller, use](bool) {
        {
          std::lock_guard<std::mutex> lock(pipe->mu);
          pipe->client_gone = true;  // a no-op if the turn has finished
          pipe->cv.notify_all();     // a turn blocked on a full pipe goes on and sees it
        }
        if (pipe->runner.joinable()) pipe->runner.join();
        CloseIfStateless(core, caller, use);
      });
  return absl::OkStatus();
}

void Complete(RouterCore& core, const Gatekeeper& gate, const httplib::Request& req,
              httplib::Response& res, bool chat) {
  const absl::Time start = absl::Now();
  const char* method = chat ? "/v1/chat/completions" : "/v1/completions";
  absl::Status outcome = [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(const Caller caller, CallerOf(gate, req));
    json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) {
      return absl::InvalidArgumentError("the request body is not valid JSON");
    }
    const std::string header = req.get_header_value("x-rsd-session");
    absl::StatusOr<openai::Request> r =
        chat ? openai::ParseChat(body, header) : openai::ParseCompletion(body, header);
    if (!r.ok()) return r.status();
    RSD_ASSIGN_OR_RETURN(SessionUse use, OpenFor(core, caller, *r));
    r->turn.set_session_id(use.id);
    return r->stream ? Streamed(core, caller, *r, use, res) : Whole(core, caller, *r, use, res);
  }();
  if (!outcome.ok()) SendError(res, outcome);
  core.metrics().Request("http", method, outcome.code(),
                         absl::ToDoubleSeconds(absl::Now() - start));
}

}  // namespace

void AddOpenAiRoutes(HttpServer& http, RouterCore& core, const Gatekeeper& gate) {
  httplib::Server& s = http.routes();
  // Each streamed turn holds a thread for its duration: room for many concurrent sessions.
  s.new_task_queue = [] { return new httplib::ThreadPool(128); };
  s.set_payload_max_length(8 << 20);
  s.Post("/v1/chat/completions",
         [&core, &gate](const httplib::Request& req, httplib::Response& res) {
           Complete(core, gate, req, res, /*chat=*/true);
         });
  s.Post("/v1/completions", [&core, &gate](const httplib::Request& req, httplib::Response& res) {
    Complete(core, gate, req, res, /*chat=*/false);
  });
  s.Get("/v1/models", [&core, &gate](const httplib::Request& req, httplib::Response& res) {
    if (absl::StatusOr<Caller> caller = CallerOf(gate, req); !caller.ok()) {
      return SendError(res, caller.status());
    }
    std::vector<std::string> names;
    for (const ModelSummary& m : core.registry().Models()) names.push_back(m.name);
    res.set_content(Dump(openai::Models(names)), "application/json");
  });
}

}  // namespace rsd::router
