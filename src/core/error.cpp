#include "salad/core/error.h"

#include <cstring>

namespace salad {

int exit_code(const std::exception& e) noexcept {
  if (dynamic_cast<const ConfigError*>(&e)) return kExitConfig;
  if (dynamic_cast<const IoError*>(&e)) return kExitIo;
  if (dynamic_cast<const CheckpointError*>(&e)) return kExitCheckpoint;
  if (dynamic_cast<const DataError*>(&e)) return kExitData;
  if (dynamic_cast<const Error*>(&e)) return kExitError;
  return kExitInternal;
}

std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r returns the message pointer (possibly not buf).
  return std::string(strerror_r(err, buf, sizeof(buf)));
}

}  // namespace salad
