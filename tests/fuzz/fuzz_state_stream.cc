// The state-stream importer (proto/state_stream.h): what a worker reads from ImportSession. The
// input is a sequence of messages, each a 2-byte little-endian length and a serialized
// StateChunk.
#include "proto/state_stream.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rsd::StateStreamLimits limits;
  limits.max_tokens = 4096;
  limits.max_block_bytes = 1 << 16;
  rsd::StateStreamReader reader(limits);
  size_t at = 0;
  while (at + 2 <= size) {
    const size_t n = data[at] | (size_t{data[at + 1]} << 8);
    at += 2;
    if (n > size - at) break;
    rsd::v1::StateChunk chunk;
    if (!chunk.ParseFromArray(data + at, static_cast<int>(n))) break;
    at += n;
    if (!reader.Add(std::move(chunk)).ok()) return 0;
  }
  (void)reader.Finish();
  return 0;
}

namespace rsd::fuzz {
std::vector<std::string> FuzzSeeds() {
  SessionState s;
  s.id = SessionId::Random();
  s.attrs.tenant = "t";
  s.attrs.epoch = 1;
  s.model_fingerprint = "m";
  s.numerics_fingerprint = "n";
  s.form = SpillForm::kAuto;
  s.plan = *LayerPlan::Parse("kr", 2);
  s.block_tokens = 2;
  s.n_chunks = 1;
  s.tokens = {1, 2, 3};
  s.turn_ends = {2, 3};
  s.blocks = {{0, 0, "zero"}, {1, 0, "one"}};
  std::string out;
  (void)WriteStateStream(s, 2, [&](const v1::StateChunk& c) {
    const std::string bytes = c.SerializeAsString();
    out.push_back(static_cast<char>(bytes.size() & 0xff));
    out.push_back(static_cast<char>(bytes.size() >> 8));
    out += bytes;
    return true;
  });
  return {out};
}
}  // namespace rsd::fuzz
