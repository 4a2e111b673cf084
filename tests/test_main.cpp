// Catch2 entry point (the one translation unit that defines Catch's main).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
