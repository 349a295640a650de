// What export.cpp shares with adapter_config.cpp (not installed).
#pragma once

#include <filesystem>
#include <string>

#include "salad/models/weight_loader.h"

namespace salad::train::detail {

/// The whole file; throws IoError naming it when it cannot be opened or read.
std::string read_bytes(const std::filesystem::path& p);

/// How the adapter's tensors are found in a checkpoint (under `adapter.`; decoder tensors ignored).
models::LoadOptions adapter_load_options();

}  // namespace salad::train::detail
