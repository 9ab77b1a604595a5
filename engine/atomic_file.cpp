#include "engine/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "engine/error.h"

namespace ember {

void write_file_atomically(const std::string& path, std::span<const std::span<const std::byte>> parts) {
  // Unique per process, thread and call: two writers of one path (threads of a server,
  // two runs) never write into the same temporary. O_EXCL: never reuse or follow what
  // already sits under that name.
  // (A leftover of a crashed writer with the same pid and thread id: take the next number.)
  static std::atomic<std::uint64_t> writes{0};
  std::string temporary;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    temporary = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(::gettid()) + "-" +
                std::to_string(writes.fetch_add(1, std::memory_order_relaxed));
    fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && (errno != EEXIST || attempt == 99)) {
      throw Error(path + ": cannot write (creating " + temporary + "): " + std::strerror(errno));
    }
  }
  auto fail = [&](const std::string& what) {
    const std::string reason = std::strerror(errno);
    ::close(fd);
    ::unlink(temporary.c_str());
    throw Error(path + ": " + what + ": " + reason + "; the previous file, if any, is untouched");
  };
  auto write_all = [&](const void* data, std::size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write failed");
      }
      p += n;
      size -= static_cast<std::size_t>(n);
    }
  };
  for (const std::span<const std::byte> part : parts) write_all(part.data(), part.size());
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(temporary.c_str());
    throw Error(path + ": close failed: " + reason + "; the previous file, if any, is untouched");
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(temporary.c_str());
    throw Error(path + ": rename failed: " + reason + "; the previous file, if any, is untouched");
  }
  // Make the rename itself durable.
  const std::string directory = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  if (const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace ember
