// Device and dtype names of the config, resolved to LibTorch values.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace qlt {

// "auto" -> CUDA when this build and machine have it, else CPU; "cpu"; "cuda"; "cuda:N".
// UserError when CUDA is asked for and this build or machine has none (no silent fallback).
at::Device resolve_device(const std::string& spec);

// "float32" | "bfloat16" (config model.compute_dtype).
at::ScalarType parse_compute_dtype(const std::string& name);

// Applies training.threads (0 = LibTorch's default).
void set_cpu_threads(int64_t threads);

}  // namespace qlt
