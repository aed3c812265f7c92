// A small self-contained test harness for the core (no third-party test framework needed,
// so the C++ tests build anywhere the core builds). ctest runs the binary once per test case.
#pragma once

#include <cstdio>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ebrix::test {

struct Case {
  const char* name;
  std::function<void()> fn;
};

std::vector<Case>& registry();

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

#define EBRIX_CAT2(a, b) a##b
#define EBRIX_CAT(a, b) EBRIX_CAT2(a, b)
#define TEST_CASE(name)                                                        \
  static void EBRIX_CAT(test_fn_, __LINE__)();                                 \
  static ::ebrix::test::Register EBRIX_CAT(test_reg_, __LINE__)(name, EBRIX_CAT(test_fn_, __LINE__)); \
  static void EBRIX_CAT(test_fn_, __LINE__)()

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::ostringstream os_;                                                  \
      os_ << __FILE__ << ":" << __LINE__ << ": CHECK(" #cond ") failed";       \
      throw ::ebrix::test::Failure(os_.str());                                 \
    }                                                                          \
  } while (0)

#define CHECK_MSG(cond, msg)                                                   \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::ostringstream os_;                                                  \
      os_ << __FILE__ << ":" << __LINE__ << ": CHECK(" #cond ") failed: " << msg; \
      throw ::ebrix::test::Failure(os_.str());                                 \
    }                                                                          \
  } while (0)

#define CHECK_THROWS_CODE(expr, expectedCode)                                  \
  do {                                                                         \
    bool threw_ = false;                                                       \
    try {                                                                      \
      expr;                                                                    \
    } catch (const ::ebrix::Error& e_) {                                       \
      threw_ = true;                                                           \
      CHECK_MSG(e_.code() == (expectedCode), "wrong code " << e_.codeName());  \
    }                                                                          \
    CHECK_MSG(threw_, "expected " #expr " to throw");                          \
  } while (0)

}  // namespace ebrix::test
