#include "train/stop_signal.h"

#include <csignal>

namespace qlt::train {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
struct sigaction g_previous_int, g_previous_term;

void on_stop_signal(int signal) {
  if (g_stop_signal != 0) {
    // Second request: fall back to the default action (terminate) on the next one.
    std::signal(signal, SIG_DFL);
    return;
  }
  g_stop_signal = signal;
}

}  // namespace

StopSignalScope::StopSignalScope() {
  g_stop_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a read interrupted by the signal continues
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGTERM, &action, &g_previous_term);
}

StopSignalScope::~StopSignalScope() {
  sigaction(SIGINT, &g_previous_int, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
}

bool stop_requested() { return g_stop_signal != 0; }
int stop_signal_number() { return g_stop_signal; }

}  // namespace qlt::train
