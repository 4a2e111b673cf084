// SIGINT / SIGTERM during training: the handler only records the request; the trainer finishes
// the current optimizer step, writes a checkpoint and exits with code 130 (DESIGN.md §3.7).
#pragma once

namespace qlt::train {

// Installs handlers for SIGINT and SIGTERM (restoring the previous ones on destruction). A
// second signal while a stop is pending restores the default action, so pressing Ctrl-C
// twice still kills a process that is stuck.
class StopSignalScope {
 public:
  StopSignalScope();
  ~StopSignalScope();
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;
};

bool stop_requested();
int stop_signal_number();  // the signal that asked to stop (0 if none)

}  // namespace qlt::train
