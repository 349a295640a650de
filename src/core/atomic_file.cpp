#include "salad/core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "salad/core/error.h"

namespace salad {

namespace fs = std::filesystem;

void write_all(int fd, const void* data, std::size_t size, const fs::path& what) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError("writing " + what.string() + ": " + errno_text(errno));
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // some file systems do not allow opening folders; the rename still happened
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const fs::path& path, const std::function<void(int fd)>& fill) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::string tmpl = (dir / ("." + path.filename().string() + ".tmp.XXXXXX")).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) {
    throw IoError("cannot create a temp file next to " + path.string() + ": " + errno_text(errno));
  }
  try {
    fill(fd);
    if (::fsync(fd) != 0) throw IoError("fsync of " + tmpl + ": " + errno_text(errno));
    if (::fchmod(fd, 0644) != 0) throw IoError("chmod of " + tmpl + ": " + errno_text(errno));
    if (::close(fd) != 0) {
      fd = -1;
      throw IoError("closing " + tmpl + ": " + errno_text(errno));
    }
    fd = -1;
    if (::rename(tmpl.c_str(), path.c_str()) != 0) {
      throw IoError("renaming " + tmpl + " to " + path.string() + ": " + errno_text(errno));
    }
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmpl.c_str());
    throw;
  }
  fsync_dir(dir);
}

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  write_file_atomic(path, [&](int fd) { write_all(fd, bytes.data(), bytes.size(), path); });
}

}  // namespace salad
