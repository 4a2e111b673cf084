// Named points in a run where a test can interrupt it deterministically. With the environment
// variable QLT_FAULT_AT=<point>:<signal> (signal INT, TERM or KILL), the process sends itself
// that signal the first time it reaches <point>; otherwise fault_point() does nothing (one
// getenv at the first call). It is how tests/integration/test_interrupts.cpp interrupts a
// run in each phase and checks that one command continues it; a user never needs it.
//
// Points of `train`: setup (after the run folder is locked), eval0 (inside the step-0
// evaluation), step (inside the first optimizer step), save (inside a checkpoint write, after
// its files, before its manifest), last_step (inside the last optimizer step), final_eval
// (inside the evaluation after the last step), final_save (inside the write of final/).
#pragma once

namespace qlt::train {

void fault_point(const char* point);

}  // namespace qlt::train
