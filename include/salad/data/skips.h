// Counting bad data items per reason: a corrupt audio file, a manifest line that does not parse,
// an utterance longer than the context. Each is logged with its file and line, counted, and
// skipped; a long run never crashes on one. Too many (a fraction above a threshold) is an error.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace salad::data {

/// Thread-safe per-reason counter of skipped items.
class SkipCounter {
 public:
  /// Logs at warn ("skipped <where>: <message>") for the first `log_limit` items of each reason,
  /// then only counts.
  explicit SkipCounter(int64_t log_limit = 20) : log_limit_(log_limit) {}
  SkipCounter(const SkipCounter& other);
  SkipCounter& operator=(const SkipCounter& other);

  /// reason: a short tag ("bad json", "missing audio", ...); where: "file:line" or an id.
  void record(const std::string& reason, const std::string& where, const std::string& message);
  int64_t total() const;
  int64_t count(const std::string& reason) const;
  std::map<std::string, int64_t> by_reason() const;
  /// "3 skipped (bad json: 1, missing audio: 2)" or "none skipped".
  std::string summary() const;
  /// Throws DataError naming `what` when total() > max_fraction * seen.
  void check(int64_t seen, double max_fraction, const std::string& what) const;
  /// Adds another counter's counts.
  void merge(const SkipCounter& other);

 private:
  mutable std::mutex mu_;
  std::map<std::string, int64_t> counts_;
  int64_t log_limit_;
};

}  // namespace salad::data
