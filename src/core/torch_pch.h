// Precompiled header for every translation unit of qlt: the LibTorch and library headers
// that dominate compile time. Including a header here does not replace including it where
// it is used.
#pragma once
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/function.h>
#include <torch/types.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
