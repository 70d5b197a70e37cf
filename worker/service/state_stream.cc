#include "worker/service/state_stream.h"

#include <cstring>
#include <string>

#include "storage/common/hash.h"

namespace rsd {
namespace {

uint64_t Chain(uint64_t h, const std::string& bytes) {
  std::string buf(sizeof(h), '\0');
  std::memcpy(buf.data(), &h, sizeof(h));
  buf += bytes;
  return Hash64(buf);
}

}  // namespace

void StateDigest::AddHeader(const v1::StateHeader& header) {
  std::string bytes;
  header.SerializeToString(&bytes);
  h_ = Chain(h_, bytes);
}

void StateDigest::AddBlock(const v1::StateBlock& block) {
  std::string bytes(8, '\0');
  const uint32_t lc[2] = {block.layer(), block.chunk()};
  std::memcpy(bytes.data(), lc, sizeof(lc));
  bytes += block.value();
  h_ = Chain(h_, bytes);
  blocks_++;
}

}  // namespace rsd
