#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "core/errors.h"

namespace qlt::optim {

ScheduleType parse_schedule_type(std::string_view name) {
  if (name == "constant") return ScheduleType::kConstant;
  if (name == "linear") return ScheduleType::kLinear;
  if (name == "cosine") return ScheduleType::kCosine;
  user_error(
      "schedule.type = \"{}\" is not a known schedule; use one of \"constant\", "
      "\"linear\", \"cosine\"",
      name);
}

std::string_view schedule_type_name(ScheduleType type) {
  switch (type) {
    case ScheduleType::kConstant:
      return "constant";
    case ScheduleType::kLinear:
      return "linear";
    case ScheduleType::kCosine:
      return "cosine";
  }
  return "?";
}

void validate(const ScheduleOptions& o) {
  if (o.warmup_steps < 0) {
    user_error("schedule.warmup_steps = {} is negative; use 0 for no warmup", o.warmup_steps);
  }
  if (o.total_steps < 0) {
    user_error("schedule total steps = {} is negative; set training.max_steps >= 0", o.total_steps);
  }
  if (!std::isfinite(o.base_lr) || o.base_lr < 0) {
    user_error("optimizer.lr = {} is invalid: it must be a finite number >= 0", o.base_lr);
  }
  if (o.type == ScheduleType::kCosine && (!std::isfinite(o.num_cycles) || o.num_cycles < 0)) {
    user_error("schedule.num_cycles = {} is invalid: it must be a finite number >= 0",
               o.num_cycles);
  }
}

// Each branch repeats transformers' Python expression in the same order of operations, so
// the double result is the same bit for bit (Python floats are IEEE doubles; math.cos is the
// C library's cos).
double lr_multiplier(const ScheduleOptions& o, int64_t step) {
  TORCH_CHECK(step >= 0, "lr_multiplier: negative step ", step);
  const auto current = static_cast<double>(step);
  const int64_t warmup = o.warmup_steps, total = o.total_steps;
  if (step < warmup) {
    // constant uses max(1.0, warmup), the others max(1, warmup): equal for integers.
    return current / static_cast<double>(std::max<int64_t>(1, warmup));
  }
  switch (o.type) {
    case ScheduleType::kConstant:
      return 1.0;
    case ScheduleType::kLinear:
      return std::max(0.0, static_cast<double>(total - step) /
                               static_cast<double>(std::max<int64_t>(1, total - warmup)));
    case ScheduleType::kCosine: {
      const double progress = static_cast<double>(step - warmup) /
                              static_cast<double>(std::max<int64_t>(1, total - warmup));
      // transformers 4.57's cosine lambda also applies `factor * (1 - min_lr_rate) +
      // min_lr_rate` with min_lr_rate 0, which leaves every factor unchanged.
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * o.num_cycles * 2.0 * progress)));
    }
  }
  TORCH_CHECK(false, "lr_multiplier: unknown schedule type");
}

double lr_at(const ScheduleOptions& o, int64_t step) { return o.base_lr * lr_multiplier(o, step); }

}  // namespace qlt::optim
