#include "storage/state_codec.h"

#include <zstd.h>

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "storage/common/hash.h"
#include "storage/common/status.h"

namespace rsd {
namespace {

constexpr char kMagic[4] = {'R', 'S', 'D', 'B'};
constexpr size_t kFixedHeaderBytes = 48;
constexpr size_t kChecksumBytes = 8;
// One block is at most a few MB in practice; anything above this is refused as corrupt.
constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 32;
constexpr int kZstdLevel = 1;

void Put16(std::string& out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void Put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void Put64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLE(const char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

bool ValidForm(uint8_t v) { return v >= 1 && v <= 3; }
bool ValidDtype(uint8_t v) { return v >= 1 && v <= 4; }
bool ValidCompression(uint8_t v) { return v <= 1; }

absl::Status DataLoss(const std::string& what) {
  return absl::DataLossError(absl::StrCat("checkpoint block: ", what));
}

// The fixed fields of a version-1 header, parsed without any validation.
struct RawHeader {
  uint16_t version;
  uint8_t form, dtype, compression;
  uint8_t reserved[3];
  uint32_t layer, first_position, n_tokens, row_elements;
  uint64_t payload_size, stored_size;
  uint16_t model_fp_len, numerics_fp_len;

  // Total encoded size these fields imply, saturating.
  uint64_t ImpliedTotal() const {
    uint64_t framing = kFixedHeaderBytes + model_fp_len + numerics_fp_len + kChecksumBytes;
    if (stored_size > std::numeric_limits<uint64_t>::max() - framing) {
      return std::numeric_limits<uint64_t>::max();
    }
    return framing + stored_size;
  }
};

RawHeader ParseRaw(const char* p) {
  RawHeader h;
  h.version = static_cast<uint16_t>(GetLE(p + 4, 2));
  h.form = static_cast<uint8_t>(p[6]);
  h.dtype = static_cast<uint8_t>(p[7]);
  h.compression = static_cast<uint8_t>(p[8]);
  for (int i = 0; i < 3; ++i) h.reserved[i] = static_cast<uint8_t>(p[9 + i]);
  h.layer = static_cast<uint32_t>(GetLE(p + 12, 4));
  h.first_position = static_cast<uint32_t>(GetLE(p + 16, 4));
  h.n_tokens = static_cast<uint32_t>(GetLE(p + 20, 4));
  h.row_elements = static_cast<uint32_t>(GetLE(p + 24, 4));
  h.payload_size = GetLE(p + 28, 8);
  h.stored_size = GetLE(p + 36, 8);
  h.model_fp_len = static_cast<uint16_t>(GetLE(p + 44, 2));
  h.numerics_fp_len = static_cast<uint16_t>(GetLE(p + 46, 2));
  return h;
}

// Checks a version-1 block whose checksum already matched.
absl::StatusOr<BlockInfo> ParseVersion1(std::string_view in) {
  RawHeader raw = ParseRaw(in.data());
  if (raw.ImpliedTotal() != in.size()) {
    return DataLoss(absl::StrCat("size mismatch: header implies ", raw.ImpliedTotal(),
                                 " bytes, block has ", in.size()));
  }
  if (!ValidForm(raw.form)) return DataLoss(absl::StrCat("unknown form ", int{raw.form}));
  if (!ValidDtype(raw.dtype)) return DataLoss(absl::StrCat("unknown dtype ", int{raw.dtype}));
  if (!ValidCompression(raw.compression)) {
    return DataLoss(absl::StrCat("unknown compression ", int{raw.compression}));
  }
  if (raw.reserved[0] != 0 || raw.reserved[1] != 0 || raw.reserved[2] != 0) {
    return DataLoss("non-zero reserved header bytes");
  }
  BlockInfo info;
  info.version = raw.version;
  info.compression = static_cast<Compression>(raw.compression);
  CheckpointHeader& h = info.header;
  h.form = static_cast<StateForm>(raw.form);
  h.dtype = static_cast<ElementType>(raw.dtype);
  h.layer = raw.layer;
  h.first_position = raw.first_position;
  h.n_tokens = raw.n_tokens;
  h.row_elements = raw.row_elements;
  const char* p = in.data() + kFixedHeaderBytes;
  h.model_fingerprint.assign(p, raw.model_fp_len);
  p += raw.model_fp_len;
  h.numerics_fingerprint.assign(p, raw.numerics_fp_len);
  p += raw.numerics_fp_len;
  if (raw.payload_size != h.PayloadBytes() || raw.payload_size > kMaxPayloadBytes) {
    return DataLoss(absl::StrCat("size mismatch: payload_size ", raw.payload_size, " but ",
                                 StateFormName(h.form), " ", h.n_tokens, " tokens x ",
                                 h.row_elements, " ", ElementTypeName(h.dtype), " implies ",
                                 h.PayloadBytes()));
  }
  if (info.compression == Compression::kNone && raw.stored_size != raw.payload_size) {
    return DataLoss(absl::StrCat("size mismatch: uncompressed block stores ", raw.stored_size,
                                 " bytes for a ", raw.payload_size, "-byte payload"));
  }
  info.payload_size = raw.payload_size;
  info.stored_size = raw.stored_size;
  info.stored_payload = std::string_view(p, raw.stored_size);
  return info;
}

}  // namespace

const char* ElementTypeName(ElementType t) {
  switch (t) {
    case ElementType::kF32:
      return "f32";
    case ElementType::kF16:
      return "f16";
    case ElementType::kBF16:
      return "bf16";
    case ElementType::kI32:
      return "i32";
  }
  return "?";
}

const char* CompressionName(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "none";
    case Compression::kZstd:
      return "zstd";
  }
  return "?";
}

size_t ElementSize(ElementType t) {
  switch (t) {
    case ElementType::kF32:
    case ElementType::kI32:
      return 4;
    case ElementType::kF16:
    case ElementType::kBF16:
      return 2;
  }
  return 0;
}

uint64_t CheckpointHeader::PayloadBytes() const {
  unsigned __int128 rows = form == StateForm::kKv ? 2 * uint64_t{n_tokens} : n_tokens;
  unsigned __int128 bytes = rows * row_elements * ElementSize(dtype);
  if (bytes > std::numeric_limits<uint64_t>::max()) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(bytes);
}

absl::Status CheckFingerprints(const CheckpointHeader& header, std::string_view model_fingerprint,
                               std::string_view numerics_fingerprint) {
  if (header.model_fingerprint != model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint block was written for model ", header.model_fingerprint,
                     ", this worker serves ", std::string(model_fingerprint)));
  }
  if (header.numerics_fingerprint != numerics_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint block was written with numerics ", header.numerics_fingerprint,
                     ", this worker computes ", std::string(numerics_fingerprint)));
  }
  return absl::OkStatus();
}

size_t FramingOverhead(const CheckpointHeader& header) {
  return kFixedHeaderBytes + header.model_fingerprint.size() + header.numerics_fingerprint.size() +
         kChecksumBytes;
}

absl::StatusOr<std::string> EncodeBlock(const CheckpointHeader& header,
                                        std::span<const uint8_t> payload, Compression compression) {
  if (!ValidForm(static_cast<uint8_t>(header.form)) ||
      !ValidDtype(static_cast<uint8_t>(header.dtype)) ||
      !ValidCompression(static_cast<uint8_t>(compression))) {
    return absl::InvalidArgumentError("EncodeBlock: form, dtype or compression out of range");
  }
  if (header.model_fingerprint.size() > CheckpointHeader::kMaxFingerprintBytes ||
      header.numerics_fingerprint.size() > CheckpointHeader::kMaxFingerprintBytes) {
    return absl::InvalidArgumentError("EncodeBlock: fingerprint longer than 65535 bytes");
  }
  uint64_t want = header.PayloadBytes();
  if (payload.size() != want || want > kMaxPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EncodeBlock: payload is ", payload.size(), " bytes but ", StateFormName(header.form), " ",
        header.n_tokens, " tokens x ", header.row_elements, " ", ElementTypeName(header.dtype),
        " needs ", want, " (limit ", kMaxPayloadBytes, ")"));
  }

  std::string compressed;
  if (compression == Compression::kZstd && !payload.empty()) {
    compressed.resize(ZSTD_compressBound(payload.size()));
    size_t n = ZSTD_compress(compressed.data(), compressed.size(), payload.data(), payload.size(),
                             kZstdLevel);
    if (ZSTD_isError(n)) {
      return absl::InternalError(absl::StrCat("zstd compress: ", ZSTD_getErrorName(n)));
    }
    compressed.resize(n);
  }
  const bool use_zstd =
      compression == Compression::kZstd && !payload.empty() && compressed.size() < payload.size();
  const size_t stored_size = use_zstd ? compressed.size() : payload.size();

  std::string out;
  out.reserve(FramingOverhead(header) + stored_size);
  out.append(kMagic, sizeof(kMagic));
  Put16(out, kCodecVersion);
  out.push_back(static_cast<char>(header.form));
  out.push_back(static_cast<char>(header.dtype));
  out.push_back(static_cast<char>(use_zstd ? Compression::kZstd : Compression::kNone));
  out.append(3, '\0');
  Put32(out, header.layer);
  Put32(out, header.first_position);
  Put32(out, header.n_tokens);
  Put32(out, header.row_elements);
  Put64(out, payload.size());
  Put64(out, stored_size);
  Put16(out, static_cast<uint16_t>(header.model_fingerprint.size()));
  Put16(out, static_cast<uint16_t>(header.numerics_fingerprint.size()));
  RSD_CHECK(out.size() == kFixedHeaderBytes);
  out.append(header.model_fingerprint);
  out.append(header.numerics_fingerprint);
  if (use_zstd) {
    out.append(compressed);
  } else if (!payload.empty()) {
    out.append(reinterpret_cast<const char*>(payload.data()), payload.size());
  }
  Put64(out, Hash64(out.data(), out.size()));
  return out;
}

absl::StatusOr<BlockInfo> InspectBlock(std::string_view in) {
  if (in.size() < sizeof(kMagic) || std::memcmp(in.data(), kMagic, sizeof(kMagic)) != 0) {
    if (in.size() < sizeof(kMagic)) {
      return DataLoss(absl::StrCat("truncated: ", in.size(), " bytes"));
    }
    return DataLoss("bad magic (not an RSDB checkpoint block)");
  }
  if (in.size() < kFixedHeaderBytes + kChecksumBytes) {
    return DataLoss(absl::StrCat("truncated: ", in.size(), " bytes, the framing alone is ",
                                 kFixedHeaderBytes + kChecksumBytes));
  }
  const size_t body = in.size() - kChecksumBytes;
  const uint64_t stored_sum = GetLE(in.data() + body, 8);
  const uint64_t sum = Hash64(in.data(), body);
  if (stored_sum != sum) {
    RawHeader raw = ParseRaw(in.data());
    if (raw.version == kCodecVersion && raw.ImpliedTotal() > in.size()) {
      return DataLoss(absl::StrCat("truncated: header implies ", raw.ImpliedTotal(),
                                   " bytes, block has ", in.size(), " (checksum mismatch)"));
    }
    return DataLoss(absl::StrCat("checksum mismatch over ", body, " bytes (stored ",
                                 Hex64(stored_sum), ", computed ", Hex64(sum), ")"));
  }
  const uint16_t version = static_cast<uint16_t>(GetLE(in.data() + 4, 2));
  if (version != kCodecVersion) {
    return absl::FailedPreconditionError(absl::StrCat("checkpoint block: codec version ", version,
                                                      " is unknown to this build (reads ",
                                                      kCodecVersion, ")"));
  }
  return ParseVersion1(in);
}

absl::StatusOr<DecodedBlock> DecodeBlock(std::string_view encoded) {
  RSD_ASSIGN_OR_RETURN(BlockInfo info, InspectBlock(encoded));
  DecodedBlock out;
  out.header = std::move(info.header);
  out.version = info.version;
  out.compression = info.compression;
  out.payload.resize(info.payload_size);
  switch (info.compression) {
    case Compression::kNone:
      if (info.payload_size > 0) {
        std::memcpy(out.payload.data(), info.stored_payload.data(), info.payload_size);
      }
      break;
    case Compression::kZstd: {
      size_t n = ZSTD_decompress(out.payload.data(), out.payload.size(), info.stored_payload.data(),
                                 info.stored_payload.size());
      if (ZSTD_isError(n)) {
        return DataLoss(absl::StrCat("zstd decompress: ", ZSTD_getErrorName(n)));
      }
      if (n != info.payload_size) {
        return DataLoss(absl::StrCat("size mismatch: zstd frame holds ", n, " bytes, header says ",
                                     info.payload_size));
      }
      break;
    }
  }
  return out;
}

}  // namespace rsd
