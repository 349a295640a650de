#include "salad/text/utf8.h"

#include <cstdint>
#include <cstring>

namespace salad::text {

namespace {

constexpr uint64_t kHighBits = 0x8080808080808080ull;

// Length of the well-formed sequence at p[0, avail), or 0 when ill-formed; then `bad` is the
// length of its maximal subpart (the bytes one U+FFFD replaces, per Unicode §3.9 / WHATWG).
inline std::size_t utf8_sequence(const unsigned char* p, std::size_t avail, std::size_t& bad) {
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    need = 2;
  } else if (c == 0xED) {
    need = 2, hi = 0x9F;  // no surrogates
  } else if (c == 0xF0) {
    need = 3, lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    need = 3;
  } else if (c == 0xF4) {
    need = 3, hi = 0x8F;  // <= U+10FFFF
  } else {
    bad = 1;
    return 0;
  }
  for (std::size_t k = 1; k <= need; ++k) {
    if (k >= avail) {
      bad = k;
      return 0;
    }
    const unsigned char d = p[k];
    if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) {
      bad = k;
      return 0;
    }
  }
  return need + 1;
}

}  // namespace

bool is_ascii(std::string_view s) {
  const char* p = s.data();
  std::size_t n = s.size();
  uint64_t acc = 0;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    acc |= v;
  }
  for (; n > 0; ++p, --n) acc |= static_cast<unsigned char>(*p);
  return (acc & kHighBits) == 0;
}

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0, bad = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t v;
      std::memcpy(&v, p + i, 8);
      if ((v & kHighBits) == 0) {
        i += 8;
        continue;
      }
    }
    const std::size_t len = utf8_sequence(p + i, n - i, bad);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

std::string utf8_lossy(std::string_view s) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::string out;
  out.reserve(n + 16);
  std::size_t i = 0, bad = 0;
  while (i < n) {
    const std::size_t len = utf8_sequence(p + i, n - i, bad);
    if (len == 0) {
      out.append(kReplacement, 3);
      i += bad;
    } else {
      out.append(s.data() + i, len);
      i += len;
    }
  }
  return out;
}

}  // namespace salad::text
