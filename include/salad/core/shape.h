// Shapes as text for messages: "[2, 64, 37]".
#pragma once

#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

namespace salad {

/// "[d0, d1, ...]" ("[]" for a scalar).
std::string shape_text(c10::IntArrayRef shape);

}  // namespace salad
