// Runs one named test case (as ctest does: `ebrix_core_tests <name>`), or every case with
// no argument; `--list` prints the names for CMake to register.
#include <cstring>
#include <exception>
#include <iostream>

#include "check.h"

namespace ebrix::test {
std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
}  // namespace ebrix::test

int main(int argc, char** argv) {
  using ebrix::test::registry;
  if (argc > 1 && std::strcmp(argv[1], "--list") == 0) {
    for (const auto& c : registry()) std::cout << c.name << "\n";
    return 0;
  }
  int failed = 0, passed = 0;
  for (const auto& c : registry()) {
    if (argc > 1 && std::strcmp(argv[1], c.name) != 0) continue;
    try {
      c.fn();
      ++passed;
    } catch (const std::exception& e) {
      ++failed;
      std::cerr << "FAIL " << c.name << ": " << e.what() << "\n";
    }
  }
  if (passed + failed == 0) {
    std::cerr << "no test named " << (argc > 1 ? argv[1] : "") << "\n";
    return 2;
  }
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}
