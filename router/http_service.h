// The router's OpenAI-compatible HTTP API (openai.h translates; this file only serves):
// POST /v1/chat/completions and /v1/completions (JSON, or Server-Sent Events with "stream": true),
// GET /v1/models. The caller's tenant is the `x-rsd-tenant` header ("default" without it), as on
// gRPC; `x-rsd-session` names a server-side session ("new" opens one and keeps it); a response
// for a kept session carries its id in the `x-rsd-session` header and a "session" field.
//
// A streamed turn's client that goes away is noticed at the next chunk it cannot take: the turn is
// cancelled and rolls back. An error before the first chunk is an HTTP error with OpenAI's JSON;
// after it, an error event ({"error": ...}) ends the stream.
#pragma once

#include "router/router_core.h"
#include "storage/common/http_server.h"

namespace rsd::router {

// Adds the routes to `http` (before it starts). `core` must outlive the server.
void AddOpenAiRoutes(HttpServer& http, RouterCore& core);

}  // namespace rsd::router
