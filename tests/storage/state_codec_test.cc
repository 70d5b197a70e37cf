// The state codec: round trips for every form, with and without zstd, and every kind of damage
// mapped to its exact status code.
#include "storage/state_codec.h"

#include <cstring>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/common/hash.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kModelFp[] = "0123456789abcdef0123456789abcdef";
constexpr char kNumericsFp[] = "cpu-k3/kv-f16/res-f32/blk16";

CheckpointHeader MakeHeader(StateForm form, uint32_t n_tokens, uint32_t row) {
  CheckpointHeader h;
  h.form = form;
  h.dtype = form == StateForm::kTokens ? ElementType::kI32 : ElementType::kF32;
  h.layer = form == StateForm::kTokens ? 0xffffffffu : 7;
  h.first_position = 48;
  h.n_tokens = n_tokens;
  h.row_elements = form == StateForm::kTokens ? 1 : row;
  h.model_fingerprint = kModelFp;
  h.numerics_fingerprint = kNumericsFp;
  return h;
}

// Incompressible bytes (random floats) or, with `compressible`, a few repeated values.
std::vector<uint8_t> MakePayload(const CheckpointHeader& h, bool compressible, uint32_t seed) {
  std::vector<uint8_t> p(h.PayloadBytes());
  std::mt19937 rng(seed);
  for (size_t i = 0; i < p.size(); i += 4) {
    uint32_t v = compressible ? (i / 4) % 3 : rng();
    std::memcpy(&p[i], &v, 4);
  }
  return p;
}

// Rewrites the trailing checksum so a deliberately edited block is intact again.
void Reseal(std::string& block) {
  uint64_t sum = Hash64(block.data(), block.size() - 8);
  for (int i = 0; i < 8; ++i) block[block.size() - 8 + i] = static_cast<char>(sum >> (8 * i));
}

struct Case {
  StateForm form;
  Compression compression;
  bool compressible;
};

class RoundTripTest : public ::testing::TestWithParam<Case> {};

TEST_P(RoundTripTest, DecodesToTheSameHeaderAndBytes) {
  const Case c = GetParam();
  CheckpointHeader h = MakeHeader(c.form, 16, 64);
  std::vector<uint8_t> payload = MakePayload(h, c.compressible, 11);
  absl::StatusOr<std::string> enc = EncodeBlock(h, payload, c.compression);
  ASSERT_TRUE(enc.ok()) << enc.status();
  absl::StatusOr<DecodedBlock> dec = DecodeBlock(*enc);
  ASSERT_TRUE(dec.ok()) << dec.status();
  EXPECT_EQ(dec->header, h);
  EXPECT_EQ(dec->version, kCodecVersion);
  ASSERT_EQ(dec->payload.size(), payload.size());
  EXPECT_EQ(std::memcmp(dec->payload.data(), payload.data(), payload.size()), 0);
  const bool expect_zstd = c.compression == Compression::kZstd && c.compressible;
  EXPECT_EQ(dec->compression, expect_zstd ? Compression::kZstd : Compression::kNone);
  if (expect_zstd) {
    EXPECT_LT(enc->size() - FramingOverhead(h), payload.size());
  } else {
    EXPECT_EQ(enc->size() - payload.size(), FramingOverhead(h));
  }
  absl::StatusOr<BlockInfo> info = InspectBlock(*enc);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->header, h);
  EXPECT_EQ(info->payload_size, payload.size());
  EXPECT_EQ(info->stored_size, enc->size() - FramingOverhead(h));
}

INSTANTIATE_TEST_SUITE_P(FormsAndCompression, RoundTripTest,
                         ::testing::Values(Case{StateForm::kKv, Compression::kNone, false},
                                           Case{StateForm::kKv, Compression::kZstd, true},
                                           Case{StateForm::kKv, Compression::kZstd, false},
                                           Case{StateForm::kResidual, Compression::kNone, false},
                                           Case{StateForm::kResidual, Compression::kZstd, true},
                                           Case{StateForm::kTokens, Compression::kNone, false},
                                           Case{StateForm::kTokens, Compression::kZstd, true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(StateFormName(info.param.form)) + "_" +
                                  CompressionName(info.param.compression) +
                                  (info.param.compressible ? "_compressible" : "_random");
                         });

TEST(StateCodecTest, KvPayloadHoldsKAndVRows) {
  CheckpointHeader h = MakeHeader(StateForm::kKv, 16, 192);
  EXPECT_EQ(h.PayloadBytes(), 2u * 16 * 192 * 4);
  h.form = StateForm::kResidual;
  EXPECT_EQ(h.PayloadBytes(), 16u * 192 * 4);
  h.dtype = ElementType::kBF16;
  EXPECT_EQ(h.PayloadBytes(), 16u * 192 * 2);
}

TEST(StateCodecTest, CheckFingerprints) {
  CheckpointHeader h = MakeHeader(StateForm::kKv, 1, 1);
  EXPECT_TRUE(CheckFingerprints(h, kModelFp, kNumericsFp).ok());
  EXPECT_THAT(CheckFingerprints(h, "other-model", kNumericsFp),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("other-model")));
  EXPECT_THAT(CheckFingerprints(h, kModelFp, "cuda-k1/kv-f16/res-f32/blk16"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("numerics " + std::string(kNumericsFp))));
}

TEST(StateCodecTest, EmptyBlockAndEmptyFingerprintsRoundTrip) {
  CheckpointHeader h = MakeHeader(StateForm::kResidual, 0, 64);
  h.model_fingerprint.clear();
  h.numerics_fingerprint.clear();
  absl::StatusOr<std::string> enc = EncodeBlock(h, {}, Compression::kZstd);
  ASSERT_TRUE(enc.ok()) << enc.status();
  EXPECT_EQ(enc->size(), FramingOverhead(h));
  absl::StatusOr<DecodedBlock> dec = DecodeBlock(*enc);
  ASSERT_TRUE(dec.ok()) << dec.status();
  EXPECT_EQ(dec->header, h);
  EXPECT_TRUE(dec->payload.empty());
}

TEST(StateCodecTest, EncodeRefusesInconsistentInput) {
  CheckpointHeader h = MakeHeader(StateForm::kKv, 16, 64);
  std::vector<uint8_t> payload = MakePayload(h, false, 1);
  payload.pop_back();
  EXPECT_THAT(EncodeBlock(h, payload, Compression::kNone),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs 8192")));
  payload.push_back(0);
  h.model_fingerprint.assign(70000, 'x');
  EXPECT_THAT(EncodeBlock(h, payload, Compression::kNone),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fingerprint")));
  h.model_fingerprint = kModelFp;
  h.form = static_cast<StateForm>(9);
  EXPECT_THAT(EncodeBlock(h, payload, Compression::kNone),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  h.form = StateForm::kKv;
  EXPECT_THAT(EncodeBlock(h, payload, static_cast<Compression>(5)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
}

std::vector<std::string> DamageTargets() {
  std::vector<std::string> blocks;
  CheckpointHeader h = MakeHeader(StateForm::kResidual, 4, 8);
  blocks.push_back(*EncodeBlock(h, MakePayload(h, false, 2), Compression::kNone));
  CheckpointHeader z = MakeHeader(StateForm::kKv, 16, 16);
  blocks.push_back(*EncodeBlock(z, MakePayload(z, true, 3), Compression::kZstd));
  return blocks;
}

TEST(StateCodecTest, EveryFlippedBitIsDataLoss) {
  for (const std::string& block : DamageTargets()) {
    ASSERT_TRUE(DecodeBlock(block).ok());
    for (size_t i = 0; i < block.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string bad = block;
        bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
        absl::StatusOr<DecodedBlock> dec = DecodeBlock(bad);
        ASSERT_EQ(dec.status().code(), absl::StatusCode::kDataLoss)
            << "offset " << i << " bit " << bit << ": " << dec.status();
        if (i >= 4) {
          EXPECT_THAT(dec.status().message(), HasSubstr("checksum mismatch")) << "offset " << i;
        }
      }
    }
  }
}

TEST(StateCodecTest, EveryTruncationAndExtensionIsDataLoss) {
  for (const std::string& block : DamageTargets()) {
    for (size_t len = 0; len < block.size(); ++len) {
      absl::StatusOr<DecodedBlock> dec = DecodeBlock(std::string_view(block).substr(0, len));
      ASSERT_THAT(dec, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")))
          << "length " << len << " of " << block.size();
    }
    EXPECT_THAT(DecodeBlock(block + '\0'), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  }
}

TEST(StateCodecTest, BadMagicIsDataLoss) {
  std::string block = DamageTargets()[0];
  block[0] = 'X';
  Reseal(block);
  EXPECT_THAT(DecodeBlock(block), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));
  EXPECT_THAT(DecodeBlock("not a block at all, but long enough to hold a header......."),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));
}

TEST(StateCodecTest, UnknownVersionIsFailedPrecondition) {
  std::string block = DamageTargets()[0];
  block[4] = 2;  // version 2, little-endian
  Reseal(block);
  EXPECT_THAT(DecodeBlock(block),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("version 2")));
  // The trailing checksum is version-independent: a damaged future block is still DATA_LOSS.
  block[block.size() / 2] ^= 1;
  EXPECT_THAT(DecodeBlock(block), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
}

TEST(StateCodecTest, IntactButInconsistentHeaderIsDataLoss) {
  const std::string good = DamageTargets()[0];
  std::string block = good;
  block[20] = 5;  // n_tokens 4 → 5: the payload no longer matches the shape
  Reseal(block);
  EXPECT_THAT(DecodeBlock(block),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size mismatch")));
  block = good;
  block[6] = 9;  // form
  Reseal(block);
  EXPECT_THAT(DecodeBlock(block), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("unknown form")));
  block = good;
  block[10] = 1;  // reserved
  Reseal(block);
  EXPECT_THAT(DecodeBlock(block), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("reserved")));
  block = good;
  block[36] ^= 1;  // stored_size
  Reseal(block);
  EXPECT_THAT(DecodeBlock(block),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size mismatch")));
}

TEST(StateCodecTest, CorruptZstdFrameWithValidChecksumIsDataLoss) {
  std::string block = DamageTargets()[1];
  ASSERT_EQ(DecodeBlock(block)->compression, Compression::kZstd);
  const size_t payload_at = 48 + strlen(kModelFp) + strlen(kNumericsFp);
  block[payload_at] ^= 0x55;  // zstd frame magic
  Reseal(block);
  EXPECT_THAT(InspectBlock(block).status(), StatusIs(absl::StatusCode::kOk, ::testing::_));
  EXPECT_THAT(DecodeBlock(block), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("zstd")));
}

TEST(StateCodecTest, RandomGarbageNeverDecodes) {
  std::mt19937 rng(5);
  std::string block = DamageTargets()[1];
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 300, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    if (i % 2 == 0 && junk.size() >= 4) std::memcpy(junk.data(), "RSDB", 4);
    EXPECT_EQ(DecodeBlock(junk).status().code(), absl::StatusCode::kDataLoss);
    // Damage several bytes at once, too.
    std::string bad = block;
    for (int k = 0; k < 3; ++k) bad[rng() % bad.size()] = static_cast<char>(rng());
    if (bad != block) {
      EXPECT_EQ(DecodeBlock(bad).status().code(), absl::StatusCode::kDataLoss);
    }
  }
}

}  // namespace
}  // namespace rsd
