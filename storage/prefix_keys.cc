#include "storage/prefix_keys.h"

#include <algorithm>

#include "storage/common/hash.h"

namespace rsd {

std::string ChainRoot(const std::string& model_fingerprint, const std::string& numerics_fingerprint,
                      int32_t block_tokens, const std::string& tenant) {
  Hasher h;
  h.Update(std::string_view("rsd-chain-v1"));
  for (const std::string* s : {&model_fingerprint, &numerics_fingerprint, &tenant}) {
    h.UpdatePod(static_cast<uint64_t>(s->size()));
    h.Update(*s);
  }
  h.UpdatePod(block_tokens);
  return h.Digest();
}

std::string ChainNext(const std::string& previous, std::span<const int32_t> chunk_tokens) {
  Hasher h;
  h.Update(previous);
  h.Update(chunk_tokens.data(), chunk_tokens.size_bytes());
  return h.Digest();
}

std::vector<std::string> ChunkKeys(const std::string& root, std::span<const int32_t> tokens,
                                   int32_t block_tokens, int32_t max_chunks) {
  std::vector<std::string> out;
  if (block_tokens <= 0) return out;
  const int64_t chunks =
      std::min<int64_t>(max_chunks, static_cast<int64_t>(tokens.size()) / block_tokens);
  std::string key = root;
  for (int64_t c = 0; c < chunks; ++c) {
    key = ChainNext(key, tokens.subspan(static_cast<size_t>(c * block_tokens),
                                        static_cast<size_t>(block_tokens)));
    out.push_back(key);
  }
  return out;
}

std::vector<std::string> PowerOfTwoPrefixKeys(const std::string& root,
                                              std::span<const int32_t> tokens, int32_t block_tokens,
                                              int32_t max_chunks) {
  std::vector<std::string> all = ChunkKeys(root, tokens, block_tokens, max_chunks);
  std::vector<std::string> out;
  for (size_t n = 1; n <= all.size(); n *= 2) out.push_back(std::move(all[n - 1]));
  return out;
}

}  // namespace rsd
