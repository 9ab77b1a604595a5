#pragma once
// A small tmpfs mounted on an existing directory for as long as the object lives: a real
// filesystem a test can fill up (ENOSPC) or make read-only (EROFS), which permissions
// cannot do for root. Mounting needs CAP_SYS_ADMIN (CI runs the tests as root); without
// it mounted() is false and why_not() says why.
#include <sys/mount.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace ember::testing {

class ScratchMount {
 public:
  ScratchMount(std::string directory, std::uint64_t bytes) : directory_(std::move(directory)) {
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0755";
    if (::mount("tmpfs", directory_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      why_not_ = "cannot mount a tmpfs on " + directory_ + " (" + std::strerror(errno) + "; needs root or CAP_SYS_ADMIN)";
      return;
    }
    mounted_ = true;
  }
  ~ScratchMount() {
    if (mounted_) ::umount2(directory_.c_str(), MNT_DETACH);
  }
  ScratchMount(const ScratchMount&) = delete;
  ScratchMount& operator=(const ScratchMount&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& why_not() const { return why_not_; }

  // Remounts it read-only: every write, root's too, fails with EROFS. Returns "" or why not.
  std::string make_read_only() {
    if (::mount(nullptr, directory_.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0) {
      return "cannot remount " + directory_ + " read-only: " + std::strerror(errno);
    }
    return "";
  }

 private:
  std::string directory_;
  std::string why_not_;
  bool mounted_ = false;
};

}  // namespace ember::testing
