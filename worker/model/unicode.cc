#include "worker/model/unicode.h"

#include <algorithm>
#include <array>

namespace rsd {
namespace {

using unicode_internal::CodepointRange;
using unicode_internal::kCodepointRanges;
using unicode_internal::kNumCodepointRanges;

uint16_t LookupFlags(uint32_t cpt) {
  const CodepointRange* end = kCodepointRanges + kNumCodepointRanges;
  const CodepointRange* it = std::upper_bound(
      kCodepointRanges, end, cpt, [](uint32_t c, const CodepointRange& r) { return c < r.first; });
  return it == kCodepointRanges ? 0 : (it - 1)->flags;
}

// ASCII dominates most text; skip the binary search for it.
const std::array<uint16_t, 128>& AsciiFlags() {
  static const std::array<uint16_t, 128> table = [] {
    std::array<uint16_t, 128> t{};
    for (uint32_t c = 0; c < 128; ++c) t[c] = LookupFlags(c);
    return t;
  }();
  return table;
}

constexpr uint32_t kReplacement = 0xFFFD;
constexpr uint32_t kMaxCodepoint = 0x10FFFF;

bool IsCont(uint8_t b) { return (b & 0xC0) == 0x80; }

}  // namespace

uint16_t CodepointFlags(uint32_t cpt) {
  if (cpt < 128) return AsciiFlags()[cpt];
  if (cpt > kMaxCodepoint) return 0;
  return LookupFlags(cpt);
}

const char* UnicodeTablesVersion() { return unicode_internal::kUnicodeVersion; }

std::vector<uint32_t> DecodeUtf8Lax(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cpt = 0;
    if ((b & 0xE0) == 0xC0) {
      len = 2;
      cpt = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3;
      cpt = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4;
      cpt = b & 0x07;
    }
    bool ok = len != 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = IsCont(s[i + k]);
      cpt = (cpt << 6) | (s[i + k] & 0x3F);
    }
    if (ok && cpt <= kMaxCodepoint) {
      out.push_back(cpt);
      i += len;
    } else {
      out.push_back(kReplacement);
      ++i;
    }
  }
  return out;
}

void AppendUtf8(uint32_t cpt, std::string* out) {
  if (cpt < 0x80) {
    out->push_back(static_cast<char>(cpt));
  } else if (cpt < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = s[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cpt, min;
    if ((b & 0xE0) == 0xC0) {
      len = 2, cpt = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3, cpt = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4, cpt = b & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if (!IsCont(s[i + k])) return false;
      cpt = (cpt << 6) | (s[i + k] & 0x3F);
    }
    if (cpt < min || cpt > kMaxCodepoint || (cpt >= 0xD800 && cpt <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

}  // namespace rsd
