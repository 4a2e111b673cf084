// LR schedules against transformers' get_{constant,linear,cosine}_schedule_with_warmup as
// LambdaLR applies them (tests/fixtures/adamw: lr_<type>[_w0], steps 0..13, warmup 3 and 0,
// total 10, base lr 1e-2): every value bit-identical. Plus the option errors.
#include <catch2/catch.hpp>

#include "adamw_fixture.h"
#include "core/errors.h"
#include "optim/lr_schedule.h"

namespace {

using Catch::Matchers::Contains;
using qlt::optim::ScheduleOptions;
using qlt::optim::ScheduleType;

}  // namespace

TEST_CASE("LR schedules equal transformers' LambdaLR values bit for bit", "[optim][schedule]") {
  const auto [name, type] =
      GENERATE(table<std::string, ScheduleType>({{"constant", ScheduleType::kConstant},
                                                 {"linear", ScheduleType::kLinear},
                                                 {"cosine", ScheduleType::kCosine}}));
  const auto warmup = GENERATE(as<int64_t>{}, 3, 0);
  const auto expected = adamw_fixture::file().tensor("lr_" + name + (warmup == 0 ? "_w0" : ""));
  ScheduleOptions o{qlt::optim::parse_schedule_type(name), warmup, /*total_steps=*/10, 1e-2};
  CHECK(o.type == type);
  CHECK(qlt::optim::schedule_type_name(type) == name);
  qlt::optim::validate(o);
  for (int64_t step = 0; step < expected.size(0); ++step) {
    INFO(name << " warmup " << warmup << " step " << step);
    CHECK(qlt::optim::lr_at(o, step) == expected[step].item<double>());
  }
}

TEST_CASE("LR schedule shapes: warmup from 0, linear to 0, cosine to 0 at the total",
          "[optim][schedule]") {
  ScheduleOptions o{ScheduleType::kLinear, 4, 20, 1.0};
  CHECK(qlt::optim::lr_at(o, 0) == 0.0);
  CHECK(qlt::optim::lr_at(o, 2) == 0.5);
  CHECK(qlt::optim::lr_at(o, 4) == 1.0);
  CHECK(qlt::optim::lr_at(o, 20) == 0.0);
  CHECK(qlt::optim::lr_at(o, 25) == 0.0);  // clamped, never negative
  o.type = ScheduleType::kCosine;
  CHECK(qlt::optim::lr_at(o, 4) == 1.0);
  CHECK(qlt::optim::lr_at(o, 12) == Approx(0.5).margin(1e-15));
  CHECK(qlt::optim::lr_at(o, 20) == Approx(0.0).margin(1e-15));
  o.type = ScheduleType::kConstant;
  CHECK(qlt::optim::lr_at(o, 1000) == 1.0);
}

TEST_CASE("LR schedule option errors name the key", "[optim][schedule][errors]") {
  CHECK_THROWS_AS(qlt::optim::parse_schedule_type("cosine_restarts"), qlt::UserError);
  CHECK_THROWS_WITH(qlt::optim::parse_schedule_type("Cosine"),
                    Contains("schedule.type = \"Cosine\"") && Contains("\"cosine\""));
  ScheduleOptions o{ScheduleType::kCosine, -1, 10, 1e-3};
  CHECK_THROWS_WITH(qlt::optim::validate(o), Contains("schedule.warmup_steps = -1"));
  o = {ScheduleType::kLinear, 0, -5, 1e-3};
  CHECK_THROWS_WITH(qlt::optim::validate(o), Contains("total steps = -5"));
  o = {ScheduleType::kLinear, 0, 5, -1e-3};
  CHECK_THROWS_WITH(qlt::optim::validate(o), Contains("optimizer.lr = -0.001"));
  o = {ScheduleType::kCosine, 0, 5, 1e-3, -0.5};
  CHECK_THROWS_WITH(qlt::optim::validate(o), Contains("schedule.num_cycles = -0.5"));
}
