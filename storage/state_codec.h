// The state codec: one versioned, checksummed byte format for a checkpoint block, the unit the
// warm and cold tiers store and workers ship to each other on export/import.
//
// Format, version 1 (all integers little-endian):
//   0   "RSDB"                        magic
//   4   u16 version                   kCodecVersion
//   6   u8  form                      StateForm
//   7   u8  dtype                     ElementType of the payload elements
//   8   u8  compression               Compression actually applied
//   9   u8[3] reserved                zero
//   12  u32 layer
//   16  u32 first_position            absolute position of the block's first token
//   20  u32 n_tokens
//   24  u32 row_elements
//   28  u64 payload_size              uncompressed payload bytes
//   36  u64 stored_size               payload bytes as stored (== payload_size unless compressed)
//   44  u16 model fingerprint length, u16 numerics fingerprint length
//   48  model fingerprint, numerics fingerprint (bytes)
//   ..  stored payload
//   end u64 XXH3-64 of every byte before it
// The trailing checksum stays the last 8 bytes in every future version, so any block can be
// verified before its version is interpreted: a flipped bit anywhere is DATA_LOSS, and only an
// intact block of an unknown version is FAILED_PRECONDITION.
//
// Payload layout (`n_tokens` tokens of the block, row-major, elements of `dtype`):
//   kv        [2][n_tokens][row_elements]: the K rows, then the V rows, of one layer
//             (row_elements = n_kv_heads * head_dim; the hot pool's per-layer block layout).
//   residual  [n_tokens][row_elements]: the residual stream entering `layer` (row_elements = d).
//   tokens    [n_tokens] token ids, dtype kI32, row_elements = 1; `layer` is BlockKey::kNoLayer
//             by convention (the codec does not check it).
// The codec checks payload size == rows * row_elements * sizeof(dtype) on both sides.
//
// All functions are pure and thread-safe. None blocks beyond the CPU work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/common/state_form.h"

namespace rsd {

inline constexpr uint16_t kCodecVersion = 1;

enum class ElementType : uint8_t { kF32 = 1, kF16 = 2, kBF16 = 3, kI32 = 4 };
enum class Compression : uint8_t { kNone = 0, kZstd = 1 };

const char* ElementTypeName(ElementType t);  // "f32", "f16", "bf16", "i32"
const char* CompressionName(Compression c);  // "none", "zstd"
size_t ElementSize(ElementType t);

// What a block holds and the layout it was written with. Fingerprints are opaque strings of at
// most kMaxFingerprintBytes each (the engine's model and numerics fingerprints).
struct CheckpointHeader {
  static constexpr size_t kMaxFingerprintBytes = 65535;

  StateForm form = StateForm::kKv;
  ElementType dtype = ElementType::kF32;
  uint32_t layer = 0;
  uint32_t first_position = 0;
  uint32_t n_tokens = 0;
  uint32_t row_elements = 0;
  std::string model_fingerprint;
  std::string numerics_fingerprint;

  // Payload bytes this header implies: rows (2 * n_tokens for kv, else n_tokens) * row_elements
  // * ElementSize(dtype).
  uint64_t PayloadBytes() const;

  friend bool operator==(const CheckpointHeader&, const CheckpointHeader&) = default;
};

// A verified block: header plus the uncompressed payload, owned.
struct DecodedBlock {
  CheckpointHeader header;
  uint16_t version = kCodecVersion;
  Compression compression = Compression::kNone;  // how it was stored
  std::vector<uint8_t> payload;
};

// A verified block's framing without its payload copied or decompressed.
struct BlockInfo {
  CheckpointHeader header;
  uint16_t version = kCodecVersion;
  Compression compression = Compression::kNone;
  uint64_t payload_size = 0;        // uncompressed
  uint64_t stored_size = 0;         // as stored
  std::string_view stored_payload;  // points into the encoded block passed in
};

// Encodes one block. With kZstd the payload is compressed (level 1) unless that does not make it
// smaller, in which case it is stored uncompressed and the header says kNone.
// INVALID_ARGUMENT if payload.size() != header.PayloadBytes(), an enum is out of range, a
// fingerprint is too long, or sizes exceed the format; INTERNAL if zstd fails.
absl::StatusOr<std::string> EncodeBlock(const CheckpointHeader& header,
                                        std::span<const uint8_t> payload, Compression compression);

// Verifies and decodes one block.
// DATA_LOSS (the message says which): shorter than the framing ("truncated"), bad magic, checksum
// mismatch (also reported as truncation when the header's sizes say the block is cut short),
// sizes that disagree with each other or with the header's shape, an out-of-range enum or
// non-zero reserved byte, a zstd frame that does not decompress to payload_size.
// FAILED_PRECONDITION: an intact block whose version this build does not know.
absl::StatusOr<DecodedBlock> DecodeBlock(std::string_view encoded);

// The same checks as DecodeBlock except decompression; copies no payload. For stats and for
// reading the header of a block without materializing it.
absl::StatusOr<BlockInfo> InspectBlock(std::string_view encoded);

// OK if the block was written with these model and numerics fingerprints; else
// FAILED_PRECONDITION naming both sides (the state must then be rebuilt from `tokens`,
// DESIGN.md section 2).
absl::Status CheckFingerprints(const CheckpointHeader& header, std::string_view model_fingerprint,
                               std::string_view numerics_fingerprint);

// Encoded size minus payload size for an uncompressed block with this header: the fixed header,
// both fingerprints and the checksum. Lets the engine report stored bytes honestly.
size_t FramingOverhead(const CheckpointHeader& header);

}  // namespace rsd
