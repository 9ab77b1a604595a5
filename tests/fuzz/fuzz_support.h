#pragma once
// What every fuzz target shares: a per-process temporary directory for the readers that
// take a path, and the rule that ember::Error (or the CLI's UsageError) is the only
// acceptable failure. Any other exception is a finding: its type and message are printed
// and the process aborts, so libFuzzer saves the input.
#include <cxxabi.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <typeinfo>

#include "engine/error.h"

namespace ember::fuzz {

// A directory of this process's own under $TMPDIR (or /tmp), removed at exit.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/ember_fuzz_XXXXXX";
    if (!mkdtemp(pattern.data())) {
      std::perror("ember fuzz: mkdtemp");
      std::abort();
    }
    path_ = pattern;
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// `name` inside the process's temporary directory.
inline std::string temporary_path(const std::string& name) {
  static const TemporaryDirectory directory;
  return directory.path() + "/" + name;
}

// Writes the input to `name` inside the process's temporary directory; returns its path.
inline std::string write_input(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const std::string path = temporary_path(name);
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!file.good()) {
    std::fprintf(stderr, "ember fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

[[noreturn]] inline void finding(const char* what) {
  std::fprintf(stderr, "ember fuzz: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

// Runs `body`; ember::Error and the `Expected` exception types are the expected outcomes of
// bad input, anything else aborts with the exception's type and message.
template <class... Expected, class Body>
void expect_only_ember_errors(Body&& body) {
  try {
    try {
      body();
    } catch (const Error&) {
    }
  } catch (const std::exception& e) {
    if ((dynamic_cast<const Expected*>(&e) || ...)) return;
    int status = 0;
    char* type = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status);
    const std::string message = std::string("an exception other than ember::Error: ") + (type ? type : typeid(e).name()) +
                                ": " + e.what();
    std::free(type);
    finding(message.c_str());
  } catch (...) {
    finding("a non-std::exception was thrown");
  }
}

// Touches every byte of a view so that AddressSanitizer checks it lies in live memory.
inline void touch(const void* data, std::size_t bytes) {
  const volatile unsigned char* p = static_cast<const volatile unsigned char*>(data);
  unsigned char sum = 0;
  for (std::size_t i = 0; i < bytes; ++i) sum = static_cast<unsigned char>(sum + p[i]);
  (void)sum;
}

}  // namespace ember::fuzz
