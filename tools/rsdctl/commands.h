// rsdctl's commands. Each takes the parsed command line and returns the process's exit status:
// 0 on success, 1 on an RPC error (reported on stderr); a usage error exits with 2.
#pragma once

#include "tools/rsdctl/args.h"
#include "tools/rsdctl/cli.h"

namespace rsd::ctl {

// Sessions (sessions.cc): create; close, undo and describe; the session list.
int Create(Cli& cli, const Args& a);
int SessionCall(Cli& cli, const Args& a);
int Sessions(Cli& cli, const Args& a);
// Every session (on `worker` unless ""), page by page, into `all`; each page's call has
// `timeout_s` (0: the command's --timeout).
grpc::Status ListAllSessions(const Cli& cli, const std::string& worker,
                             v1::ListSessionsResponse* all, double timeout_s = 0);

// Chat (chat.cc): one turn, a script of turns, or one turn per line of stdin.
int Chat(Cli& cli, const Args& a);

// Workers and models (workers.cc): listings; cordon, uncordon, drain and failover; migrate.
int Workers(Cli& cli, const Args& a);
int Models(Cli& cli, const Args& a);
int WorkerCommand(Cli& cli, const Args& a);
int Migrate(Cli& cli, const Args& a);

// API keys (keys.cc): keys create, list, revoke.
int Keys(Cli& cli, const Args& a);

}  // namespace rsd::ctl
