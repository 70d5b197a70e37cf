// The router's OpenAI-compatible HTTP API (openai.h translates; this file only serves):
// POST /v1/chat/completions and /v1/completions (JSON, or Server-Sent Events with "stream": true),
// GET /v1/models. The caller is checked by the Gatekeeper as on gRPC: with --auth the
// `Authorization: Bearer <key>` header names the key and its tenant (401 without a valid key, 403
// for a worker key), else the tenant is the `x-rsd-tenant` header ("default" without it);
// `x-rsd-session` names a server-side session ("new" opens one and keeps it); a response
// for a kept session carries its id in the `x-rsd-session` header and a "session" field.
//
// A streamed turn's client that goes away is noticed at the next chunk it cannot take: the turn is
// cancelled and rolls back. An error before the first chunk is an HTTP error with OpenAI's JSON;
// after it, an error event ({"error": ...}) ends the stream.
#pragma once

#include "router/gatekeeper.h"
#include "router/router_core.h"
#include "storage/common/http_server.h"

namespace rsd::router {

// Adds the routes to `http` (before it starts). `core` and `gate` must outlive the server.
void AddOpenAiRoutes(HttpServer& http, RouterCore& core, const Gatekeeper& gate);

}  // namespace rsd::router
