// The key of one checkpoint block in the warm and cold tiers, and its on-disk encoding.
#pragma once

#include <compare>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "storage/common/ids.h"

namespace rsd {

// One checkpoint block of one session: `layer` is the model layer (`kv` and `residual` forms);
// `block` is the block index within the session (tokens [block * block_tokens, ...)).
// Whole-session entries that belong to no layer (a `tokens` form block, a session's token log
// cached in host memory) use layer == kNoLayer, which sorts after every real layer.
// Ordering is (session, layer, block), the same as the encoded key's byte order.
struct BlockKey {
  static constexpr uint32_t kNoLayer = std::numeric_limits<uint32_t>::max();
  // Encoded size: session(16) | layer(4, big-endian) | block(4, big-endian).
  static constexpr size_t kEncodedSize = SessionId::kSize + 8;

  SessionId session;
  uint32_t layer = 0;
  uint32_t block = 0;

  friend constexpr auto operator<=>(const BlockKey&, const BlockKey&) = default;
  friend constexpr bool operator==(const BlockKey&, const BlockKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockKey& k) {
    return H::combine(std::move(h), k.session, k.layer, k.block);
  }
  friend std::ostream& operator<<(std::ostream& os, const BlockKey& k) {
    return os << k.ToString();
  }

  // "<session hex>/L<layer>/B<block>" (layer "tokens" for kNoLayer), for messages.
  std::string ToString() const;
  // The 24-byte big-endian encoding; byte order == key order.
  std::string Encode() const;
  // The inverse of Encode(); nullopt unless `bytes` is exactly 24 bytes.
  static std::optional<BlockKey> Decode(std::string_view bytes);
};

}  // namespace rsd
