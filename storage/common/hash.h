// Non-cryptographic hashing for fingerprints and checksums (XXH3).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace rsd {

// Streaming 128-bit XXH3 hasher. Not thread-safe; one per producer.
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void Update(const void* data, size_t n);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  template <typename T>
  void UpdatePod(const T& v) {
    Update(&v, sizeof(T));
  }
  // 32 lowercase hex digits.
  std::string HexDigest() const;
  // The same 128 bits as 16 bytes, high half first.
  std::string Digest() const;

 private:
  void* state_;  // XXH3_state_t*
};

uint64_t Hash64(const void* data, size_t n);
inline uint64_t Hash64(std::string_view s) { return Hash64(s.data(), s.size()); }
std::string Hex64(uint64_t v);

}  // namespace rsd
