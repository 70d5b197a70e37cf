// rsdctl's session commands: create, close, undo, describe, sessions.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/rsdctl/commands.h"

namespace rsd::ctl {
namespace {

json SessionJson(const v1::SessionInfo& s) {
  return {
      {"session", s.session_id()},
      {"tenant", s.tenant()},
      {"model", s.model()},
      {"worker", s.worker()},
      {"epoch", s.epoch()},
      {"turns", s.turns()},
      {"token_count", s.token_count()},
      {"bytes", {{"hot", s.bytes().hot()}, {"warm", s.bytes().warm()}, {"cold", s.bytes().cold()}}},
      {"blocks", s.blocks()},
      {"shared_blocks", s.shared_blocks()},
      {"options",
       {{"ttl_seconds", s.options().ttl_seconds()},
        {"pin", s.options().pin()},
        {"priority", s.options().priority()}}},
      {"state", s.state()},
      {"idle_seconds", s.idle_seconds()}};
}

void PrintSession(const Cli& cli, const v1::SessionInfo& s) {
  if (cli.json) return PrintJson(SessionJson(s));
  PrintTable({{"session", s.session_id()},
              {"tenant", s.tenant()},
              {"model", s.model()},
              {"worker", s.worker()},
              {"epoch", absl::StrCat(s.epoch())},
              {"turns", absl::StrCat(s.turns())},
              {"token_count", absl::StrCat(s.token_count())},
              {"bytes", absl::StrCat("hot ", Bytes(s.bytes().hot()), ", warm ",
                                     Bytes(s.bytes().warm()), ", cold ", Bytes(s.bytes().cold()))},
              {"blocks", absl::StrCat(s.blocks(), " hot, ", s.shared_blocks(), " shared")},
              {"state", s.state()},
              {"idle_seconds", absl::StrFormat("%.1f", s.idle_seconds())}});
}

}  // namespace

int Create(Cli& cli, const Args& a) {
  if (!a.positional.empty()) Usage("'create' takes no positional arguments");
  v1::CreateSessionRequest req;
  req.set_model(a.Get("model"));
  if (auto ttl = NumberFlag<uint32_t>(a, "ttl")) req.mutable_options()->set_ttl_seconds(*ttl);
  req.mutable_options()->set_pin(a.Get("pin") == "true");
  if (auto p = NumberFlag<int32_t>(a, "priority")) req.mutable_options()->set_priority(*p);
  v1::SessionInfo info;
  grpc::Status s = cli.client->CreateSession(cli.Context().get(), req, &info);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    json j = SessionJson(info);
    PrintJson(j);
  } else {
    PrintTable(
        {{"session", info.session_id()}, {"worker", info.worker()}, {"model", info.model()}});
  }
  return 0;
}

int SessionCall(Cli& cli, const Args& a) {
  v1::SessionRequest req;
  req.set_session_id(Target(a, "session", "session id"));
  grpc::Status s;
  if (a.command == "close") {
    v1::CloseSessionResponse resp;
    s = cli.client->CloseSession(cli.Context().get(), req, &resp);
    if (s.ok()) {
      if (cli.json) {
        PrintJson({{"session", req.session_id()}, {"closed", true}});
      } else {
        std::printf("closed %s\n", req.session_id().c_str());
      }
    }
    return Report(s, cli.router);
  }
  v1::SessionInfo info;
  if (a.command == "undo") {
    s = cli.client->UndoTurn(cli.Context().get(), req, &info);
  } else {
    v1::DescribeSessionRequest dreq;
    dreq.set_session_id(req.session_id());
    // The client view (tenant-checked) when a tenant is given; otherwise the admin view.
    s = cli.tenant.empty() ? cli.admin->DescribeSession(cli.Context().get(), dreq, &info)
                           : cli.client->GetSession(cli.Context().get(), req, &info);
  }
  if (!s.ok()) return Report(s, cli.router);
  PrintSession(cli, info);
  return 0;
}

grpc::Status ListAllSessions(const Cli& cli, const std::string& worker,
                             v1::ListSessionsResponse* all, double timeout_s) {
  v1::ListSessionsRequest req;
  req.set_worker(worker);
  req.set_page_size(1000);
  for (;;) {
    v1::ListSessionsResponse page;
    std::unique_ptr<grpc::ClientContext> ctx = cli.Context();
    if (timeout_s > 0) {
      ctx->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    }
    grpc::Status s = cli.admin->ListSessions(ctx.get(), req, &page);
    if (!s.ok()) return s;
    for (v1::SessionInfo& i : *page.mutable_sessions()) *all->add_sessions() = std::move(i);
    if (page.next_page_token().empty()) return grpc::Status::OK;
    req.set_page_token(page.next_page_token());
  }
}

int Sessions(Cli& cli, const Args& a) {
  v1::ListSessionsResponse resp;
  grpc::Status s = ListAllSessions(cli, a.Get("worker"), &resp);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    json list = json::array();
    for (const v1::SessionInfo& i : resp.sessions()) list.push_back(SessionJson(i));
    PrintJson({{"sessions", list}});
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"SESSION", "TENANT", "MODEL", "WORKER", "EPOCH", "TURNS", "TOKENS", "IDLE_S"}};
  for (const v1::SessionInfo& i : resp.sessions()) {
    rows.push_back({i.session_id(), i.tenant(), i.model(), i.worker(), absl::StrCat(i.epoch()),
                    absl::StrCat(i.turns()), absl::StrCat(i.token_count()),
                    absl::StrFormat("%.0f", i.idle_seconds())});
  }
  PrintTable(rows);
  return 0;
}

}  // namespace rsd::ctl
