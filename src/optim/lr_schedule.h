// Learning-rate schedules with linear warmup, the multipliers of transformers 4.57
// (transformers/optimization.py) as torch's LambdaLR applies them: lr(step) = base_lr *
// multiplier(step), `step` = the 0-based index of the optimizer step about to run
// (LambdaLR's last_epoch when optimizer.step() is called).
//   constant: step < warmup ? step / max(1, warmup) : 1
//   linear:   step < warmup ? step / max(1, warmup)
//                           : max(0, (total - step) / max(1, total - warmup))
//   cosine:   step < warmup ? step / max(1, warmup)
//                           : max(0, 0.5 * (1 + cos(pi * num_cycles * 2 * progress))),
//             progress = (step - warmup) / max(1, total - warmup)
// Past `total` linear stays at 0 and cosine (num_cycles 0.5) rises again, as in transformers.
#pragma once

#include <cstdint>
#include <string_view>

namespace qlt::optim {

enum class ScheduleType { kConstant, kLinear, kCosine };

struct ScheduleOptions {
  ScheduleType type = ScheduleType::kConstant;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // the run's optimizer steps; unused by "constant"
  double base_lr = 2e-4;
  double num_cycles = 0.5;  // cosine only (transformers' default)
};

// "constant" | "linear" | "cosine"; anything else is a UserError naming the key
// "schedule.type" and listing the accepted values.
ScheduleType parse_schedule_type(std::string_view name);
std::string_view schedule_type_name(ScheduleType type);

// UserError (naming "schedule.<key>") for warmup_steps < 0, total_steps < 0, a negative or
// non-finite base_lr, or a cosine num_cycles that is negative or non-finite.
void validate(const ScheduleOptions& options);

// The multiplier for optimizer step `step` (>= 0) and the learning rate base_lr * multiplier.
double lr_multiplier(const ScheduleOptions& options, int64_t step);
double lr_at(const ScheduleOptions& options, int64_t step);

}  // namespace qlt::optim
