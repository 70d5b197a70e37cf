// Block identity across workers (issue #15): a chunk's key is a chained XXH3-128 of the model and
// numerics fingerprints, the block size and the tenant (the root), the previous chunk's key and
// this chunk's tokens, so equal keys name the same tokens from the start of the sequence through
// the chunk, of one tenant, on any worker with those fingerprints. The tenant is in the root
// because sharing never crosses tenants (what one tenant's prompts are must not show in another's
// placement or latency). Keys are hints (routing); reuse itself always compares tokens.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rsd {

// 16 bytes.
std::string ChainRoot(const std::string& model_fingerprint, const std::string& numerics_fingerprint,
                      int32_t block_tokens, const std::string& tenant);
std::string ChainNext(const std::string& previous, std::span<const int32_t> chunk_tokens);

// The key of each leading whole chunk of `tokens` (the i-th names chunks 0..i), at most
// `max_chunks`.
std::vector<std::string> ChunkKeys(const std::string& root, std::span<const int32_t> tokens,
                                   int32_t block_tokens, int32_t max_chunks);

// The keys of the first 1, 2, 4, 8, ... whole chunks of `tokens` (a compact summary of its
// prefixes: a longest common prefix is found to within a factor of two), at most `max_chunks`.
std::vector<std::string> PowerOfTwoPrefixKeys(const std::string& root,
                                              std::span<const int32_t> tokens, int32_t block_tokens,
                                              int32_t max_chunks);

}  // namespace rsd
