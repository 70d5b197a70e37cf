// What the router decodes: its journal's records and API key records (RocksDB values it reads
// back), and OpenAI-style request bodies from any HTTP client. The first input byte picks which.
#include "nlohmann/json.hpp"
#include "router/api_keys.h"
#include "router/journal.h"
#include "router/openai.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0:
      (void)rsd::router::DecodeSessionRecord(bytes, "fuzz");
      break;
    case 1:
      (void)rsd::router::DecodeTurnRecord(bytes, "fuzz");
      break;
    case 2:
      (void)rsd::router::DecodePendingTurn(bytes, "fuzz");
      break;
    case 3:
      (void)rsd::router::DecodeKeyRecord(bytes, "0123456789abcdef");
      break;
    default: {
      const nlohmann::json body = nlohmann::json::parse(bytes, nullptr, false);
      if (!body.is_discarded()) {
        (void)rsd::router::openai::ParseChat(body, "");
        (void)rsd::router::openai::ParseCompletion(body, "new");
      }
    }
  }
  return 0;
}

namespace rsd::fuzz {
std::vector<std::string> FuzzSeeds() {
  router::SessionRecord s;
  s.id = SessionId::Random();
  s.tenant = "acme";
  s.model = "m";
  s.worker = "w1";
  router::TurnRecord t;
  t.turn = 1;
  t.turn_id = "t1";
  t.message = "hi";
  t.tokens = {1, 2};
  t.stop = {"x"};
  t.top_p = 0.5f;
  router::PendingRecord p;
  p.turn_id = "t2";
  p.max_tokens = 4;
  router::KeyRecord k;
  k.id = "0123456789abcdef";
  k.sha256 = std::string(32, '\x01');
  k.tenant = "acme";
  return {
      std::string(1, '\0') + router::EncodeSessionRecord(s),
      std::string(1, '\1') + router::EncodeTurnRecord(t),
      std::string(1, '\2') + router::EncodePendingTurn(p),
      std::string(1, '\3') + router::EncodeKeyRecord(k),
      std::string(1, '\4') +
          R"({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,)"
          R"("temperature":0.5,"stop":["a"],"stream":true,"stream_options":{"include_usage":true}})",
  };
}
}  // namespace rsd::fuzz
