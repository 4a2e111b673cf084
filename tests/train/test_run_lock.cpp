// RunDirLock: exclusive per folder across processes, the holder named, released by the kernel
// when the holder dies, and no file left in the folder.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "core/errors.h"
#include "io/safetensors_test_util.h"
#include "train/run_lock.h"

using Catch::Matchers::Contains;
using qlt::train::RunDirLock;

TEST_CASE("run lock: a second process is refused, naming the holder; its death frees it",
          "[train][lock]") {
  qlt::test::TempDir tmp;
  const auto run = tmp / "run";
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The holder: lock, tell the parent, wait to be killed.
    try {
      RunDirLock held = RunDirLock::acquire(run);
      const char ok = 'k';
      (void)!::write(ready[1], &ok, 1);
      while (true) ::pause();
    } catch (...) {
      ::_exit(3);
    }
  }
  char got = 0;
  REQUIRE(::read(ready[0], &got, 1) == 1);
  REQUIRE_THROWS_WITH(RunDirLock::acquire(run),
                      Contains(run.string()) && Contains("in use by another qlora-train process") &&
                          Contains("pid " + std::to_string(child)));
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  RunDirLock mine = RunDirLock::acquire(run);
  CHECK(mine.held());
  CHECK(std::filesystem::is_empty(run));  // no lock file: a refused start leaves no trace
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_CASE("run lock: a path that is a file is a UserError", "[train][lock]") {
  qlt::test::TempDir tmp;
  qlt::test::write_bytes(tmp / "file", "x");
  REQUIRE_THROWS_AS(RunDirLock::acquire(tmp / "file"), qlt::UserError);
  REQUIRE_THROWS_WITH(RunDirLock::acquire(tmp / "file" / "sub"),
                      Contains("cannot create the run folder"));
}
