// rsdctl's chat command: turns streamed from the router, printed as they arrive (table mode) or
// as one JSON object per turn.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tools/chat_script.h"
#include "tools/rsdctl/commands.h"

namespace rsd::ctl {
namespace {

struct TurnResult {
  v1::TurnDone done;
  std::vector<int32_t> tokens;
  std::string text;
};

// One turn. Table mode streams the text to stdout as it arrives.
grpc::Status RunTurn(Cli& cli, const v1::TurnRequest& req, TurnResult* out) {
  std::unique_ptr<grpc::ClientContext> ctx = cli.Context();
  std::unique_ptr<grpc::ClientReader<v1::ChatEvent>> reader = cli.client->Chat(ctx.get(), req);
  v1::ChatEvent ev;
  bool got_done = false;
  while (reader->Read(&ev)) {
    if (ev.has_delta()) {
      out->tokens.insert(out->tokens.end(), ev.delta().tokens().begin(), ev.delta().tokens().end());
      out->text += ev.delta().text();
      if (!cli.json) {
        std::fwrite(ev.delta().text().data(), 1, ev.delta().text().size(), stdout);
        std::fflush(stdout);
      }
    } else if (ev.has_done()) {
      out->done = ev.done();
      got_done = true;
    }
  }
  grpc::Status s = reader->Finish();
  if (s.ok() && !got_done) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "the turn stream ended without a TurnDone");
  }
  return s;
}

void PrintTurn(const Cli& cli, const std::string& session, const TurnResult& r) {
  const v1::TurnDone& d = r.done;
  // TurnDone carries every token; the streamed ones stand in if it does not.
  std::vector<int32_t> tokens(d.tokens().begin(), d.tokens().end());
  if (tokens.empty()) tokens = r.tokens;
  const std::string text = d.text().empty() ? r.text : d.text();
  if (cli.json) {
    PrintJson({{"session", session},
               {"worker", d.worker()},
               {"turn", d.turn()},
               {"tokens", tokens},
               {"text", text},
               {"finish_reason", d.finish_reason()},
               {"usage",
                {{"prompt_tokens", d.usage().prompt_tokens()},
                 {"completion_tokens", d.usage().completion_tokens()},
                 {"history_tokens", d.usage().history_tokens()}}},
               {"seed", d.seed()},
               {"replayed", d.replayed()},
               {"restored_from", d.restored_from()},
               {"queue_seconds", d.queue_seconds()},
               {"prefill_seconds", d.prefill_seconds()},
               {"decode_seconds", d.decode_seconds()}});
    return;
  }
  std::printf("\n");
  std::fflush(stdout);
  std::fprintf(stderr,
               "[turn %u on %s: %lld tokens, finish %s, history %lld tokens, seed %llu%s]\n",
               d.turn(), d.worker().c_str(), static_cast<long long>(tokens.size()),
               d.finish_reason().c_str(), static_cast<long long>(d.usage().history_tokens()),
               static_cast<unsigned long long>(d.seed()), d.replayed() ? ", replayed" : "");
}

v1::TurnRequest TurnTemplate(const Args& a, const std::string& session) {
  v1::TurnRequest req;
  req.set_session_id(session);
  if (auto n = NumberFlag<int32_t>(a, "max-tokens")) {
    if (*n < 0) Usage("--max-tokens must be >= 0");
    req.set_max_tokens(*n);
  }
  if (auto t = NumberFlag<float>(a, "temperature")) req.mutable_sampling()->set_temperature(*t);
  if (auto k = NumberFlag<int32_t>(a, "top-k")) req.mutable_sampling()->set_top_k(*k);
  if (auto p = NumberFlag<float>(a, "top-p")) req.mutable_sampling()->set_top_p(*p);
  if (auto s = NumberFlag<uint64_t>(a, "seed")) req.mutable_sampling()->set_seed(*s);
  if (a.Has("stop")) {
    for (const std::string& s : a.flags.at("stop")) req.add_stop(s);
  }
  return req;
}

// The user turns of a JSON Lines script ({"role": "user", "content": "..."}); a usage error if
// it cannot be read.
std::vector<std::string> ReadScript(const std::string& path) {
  absl::StatusOr<std::vector<std::string>> turns = ReadChatScript(path);
  if (!turns.ok()) Usage(absl::StrCat("--script ", turns.status().message()));
  return *std::move(turns);
}

}  // namespace

int Chat(Cli& cli, const Args& a) {
  if (!cli.timeout_s_set) cli.timeout_s = 600;
  std::string session = a.Has("session") ? a.Get("session") : "";
  if (session.empty() && a.positional.size() == 1) session = a.positional[0];
  if (session.empty()) Usage("'chat' needs --session ID");
  if (a.Has("message") && a.Has("script")) Usage("--message and --script exclude each other");
  const v1::TurnRequest base = TurnTemplate(a, session);
  const std::string turn_id = a.Get("turn-id");

  auto one = [&](const std::string& message, const std::string& id) -> int {
    v1::TurnRequest req = base;
    req.set_message(message);
    req.set_turn_id(id);
    TurnResult r;
    grpc::Status s = RunTurn(cli, req, &r);
    if (!s.ok()) {
      if (!cli.json && !r.text.empty()) std::printf("\n");
      return Report(s, cli.router);
    }
    PrintTurn(cli, session, r);
    return 0;
  };
  if (a.Has("message")) return one(a.Get("message"), turn_id);

  const bool script = a.Has("script");
  std::vector<std::string> turns;
  if (script) turns = ReadScript(a.Get("script"));
  const bool tty = !script && isatty(STDIN_FILENO);
  int status = 0;
  for (size_t n = 0;; ++n) {
    std::string message;
    if (script) {
      if (n >= turns.size()) break;
      message = turns[n];
    } else {
      if (tty) std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, message)) break;
      if (message.empty()) continue;
    }
    const std::string id = turn_id.empty() ? "" : absl::StrCat(turn_id, "-", n + 1);
    status = one(message, id);
    if (status != 0 && script) return status;
  }
  return status;
}

}  // namespace rsd::ctl
