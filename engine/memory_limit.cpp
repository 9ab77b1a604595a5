#include "engine/memory_limit.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>

#include "engine/error.h"

namespace ember {
namespace {

// The value of a "Name:   1234 kB" line of /proc/meminfo, in bytes.
std::optional<std::size_t> meminfo_bytes(const std::string& name) {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (line.rfind(name + ":", 0) != 0) continue;
    unsigned long long kib = 0;
    if (std::sscanf(line.c_str() + name.size() + 1, "%llu", &kib) != 1) return std::nullopt;
    return static_cast<std::size_t>(kib) * 1024;
  }
  return std::nullopt;
}

// A cgroup v2 file holding one number (or "max").
std::optional<std::size_t> cgroup_number(const std::string& file) {
  std::ifstream in("/sys/fs/cgroup/" + file);
  std::string text;
  if (!(in >> text) || text == "max") return std::nullopt;
  try {
    return static_cast<std::size_t>(std::stoull(text));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

std::size_t available_memory_bytes() {
  std::optional<std::size_t> available = meminfo_bytes("MemAvailable");
  const std::optional<std::size_t> cgroup_max = cgroup_number("memory.max");
  if (cgroup_max) {
    const std::size_t used = cgroup_number("memory.current").value_or(0);
    const std::size_t left = *cgroup_max > used ? *cgroup_max - used : 0;
    if (!available || left < *available) available = left;
  }
  if (!available) throw Error("/proc/meminfo: no MemAvailable line: cannot tell the available memory (give a memory limit)");
  return *available;
}

std::size_t resolve_memory_limit(std::size_t requested) {
  return requested == default_memory_limit ? available_memory_bytes() : requested;
}

void check_memory_limit(std::size_t needed, std::size_t limit, std::string_view what, std::string_view breakdown) {
  if (needed <= limit) return;
  throw Error(std::string(what) + " needs " + format_bytes(needed) + (breakdown.empty() ? "" : " (" + std::string(breakdown) + ")") +
              "; the memory limit is " + format_bytes(limit) +
              " (the available memory unless set: --memory-limit, SessionOptions::memory_limit, ember_session_create_limited)");
}

std::size_t parse_memory_size(std::string_view text, std::string_view field) {
  auto fail = [&]() -> std::size_t {
    throw Error(std::string(field) + ": expected a size in bytes such as 512M, 4G or 1.5G (0 for the available memory), found '" +
                std::string(text) + "'");
  };
  std::size_t digits_end = 0;
  while (digits_end < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits_end])) || text[digits_end] == '.')) ++digits_end;
  if (digits_end == 0) return fail();
  const std::string number(text.substr(0, digits_end));
  std::string unit(text.substr(digits_end));
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.ends_with('B')) unit.pop_back();                    // "GB", "GiB" and "G" alike
  if (unit.size() == 2 && unit[1] == 'I') unit.pop_back();
  double scale = 1;
  if (unit == "K") scale = 1024.0;
  else if (unit == "M") scale = 1024.0 * 1024;
  else if (unit == "G") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T") scale = 1024.0 * 1024 * 1024 * 1024;
  else if (!unit.empty()) return fail();
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(value)) return fail();
  const double bytes = std::ceil(value * scale);
  // 2^64 as a double: anything at or above it does not fit in size_t.
  if (bytes >= 18446744073709551616.0) return fail();
  return static_cast<std::size_t>(bytes);
}

std::string format_bytes(std::size_t bytes) {
  char text[64];
  if (bytes < 1024) {
    std::snprintf(text, sizeof text, "%zu bytes", bytes);
  } else {
    const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double value = static_cast<double>(bytes) / 1024;
    int unit = 0;
    while (value >= 1024 && unit < 5) {
      value /= 1024;
      ++unit;
    }
    std::snprintf(text, sizeof text, value < 10 ? "%.2f %s" : value < 100 ? "%.1f %s" : "%.0f %s", value, units[unit]);
  }
  return text;
}

}  // namespace ember
