// Precompiled header for src/, apps/ and tests/: the heavy LibTorch include lives here, never in
// a public header.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
