// UTF-8 validation and lossy repair, shared by the tokenizers and text readers. Repair follows
// the W3C/WHATWG practice that Hugging Face (Rust's String::from_utf8_lossy) applies: each
// maximal ill-formed subsequence (Unicode §3.9) becomes one U+FFFD.
#pragma once

#include <string>
#include <string_view>

namespace salad::text {

/// True when every byte is < 0x80.
bool is_ascii(std::string_view s);
/// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool is_valid_utf8(std::string_view s);
/// `s` with each maximal ill-formed subsequence replaced by U+FFFD.
std::string utf8_lossy(std::string_view s);

}  // namespace salad::text
