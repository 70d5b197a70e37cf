#include "storage/block_key.h"

#include "absl/strings/str_cat.h"

namespace rsd {
namespace {

void PutBigEndian32(uint32_t v, char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(v >> (24 - 8 * i));
}

uint32_t GetBigEndian32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

}  // namespace

std::string BlockKey::ToString() const {
  if (layer == kNoLayer) return absl::StrCat(session.ToHex(), "/tokens/B", block);
  return absl::StrCat(session.ToHex(), "/L", layer, "/B", block);
}

std::string BlockKey::Encode() const {
  std::string out(kEncodedSize, '\0');
  session.AsStringView().copy(out.data(), SessionId::kSize);
  PutBigEndian32(layer, out.data() + SessionId::kSize);
  PutBigEndian32(block, out.data() + SessionId::kSize + 4);
  return out;
}

std::optional<BlockKey> BlockKey::Decode(std::string_view bytes) {
  if (bytes.size() != kEncodedSize) return std::nullopt;
  BlockKey k;
  k.session =
      SessionId::FromBytes({reinterpret_cast<const uint8_t*>(bytes.data()), SessionId::kSize});
  k.layer = GetBigEndian32(bytes.data() + SessionId::kSize);
  k.block = GetBigEndian32(bytes.data() + SessionId::kSize + 4);
  return k;
}

}  // namespace rsd
