// The state codec's decoder (storage/state_codec.h): checkpoint blocks come from other workers'
// streams and from disk.
#include <cstring>

#include "storage/state_codec.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)rsd::InspectBlock(bytes);
  (void)rsd::DecodeBlock(bytes);
  return 0;
}

namespace rsd::fuzz {
std::vector<std::string> FuzzSeeds() {
  std::vector<std::string> out;
  for (StateForm form : {StateForm::kKv, StateForm::kResidual}) {
    for (Compression c : {Compression::kNone, Compression::kZstd}) {
      CheckpointHeader h;
      h.form = form;
      h.dtype = form == StateForm::kKv ? ElementType::kF16 : ElementType::kF32;
      h.layer = 1;
      h.first_position = 16;
      h.n_tokens = 2;
      h.row_elements = 4;
      h.model_fingerprint = "model";
      h.numerics_fingerprint = "numerics";
      std::vector<uint8_t> payload(h.PayloadBytes());
      for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
      absl::StatusOr<std::string> block = EncodeBlock(h, payload, c);
      if (block.ok()) out.push_back(*block);
    }
  }
  return out;
}
}  // namespace rsd::fuzz
