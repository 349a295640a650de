// Atomic file writes: nothing the user wrote is lost if the process dies mid-write or the disk
// fills up. The data goes to a temp file in the same folder, is fsync'ed, then renamed over the
// target, and the folder is fsync'ed.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string_view>

namespace salad {

/// Writes `bytes` to `path` atomically. Throws IoError naming the file (the old file, if any,
/// is left untouched on failure).
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

/// Streaming form: `fill(fd)` writes the content to the open temp file descriptor with
/// write_all(); the rename happens only if it returns normally.
void write_file_atomic(const std::filesystem::path& path, const std::function<void(int fd)>& fill);

/// write(2) until all `size` bytes are out; throws IoError naming `what` on failure (ENOSPC...).
void write_all(int fd, const void* data, std::size_t size, const std::filesystem::path& what);

/// fsync of a folder, so a rename inside it is durable.
void fsync_dir(const std::filesystem::path& dir);

}  // namespace salad
