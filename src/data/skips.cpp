#include "salad/data/skips.h"

#include <spdlog/spdlog.h>

#include "salad/core/error.h"

namespace salad::data {

SkipCounter::SkipCounter(const SkipCounter& other) {
  std::lock_guard<std::mutex> lk(other.mu_);
  counts_ = other.counts_;
  log_limit_ = other.log_limit_;
}

SkipCounter& SkipCounter::operator=(const SkipCounter& other) {
  if (this == &other) return *this;
  std::map<std::string, int64_t> c;
  int64_t limit;
  {
    std::lock_guard<std::mutex> lk(other.mu_);
    c = other.counts_;
    limit = other.log_limit_;
  }
  std::lock_guard<std::mutex> lk(mu_);
  counts_ = std::move(c);
  log_limit_ = limit;
  return *this;
}

void SkipCounter::record(const std::string& reason, const std::string& where,
                         const std::string& message) {
  int64_t n;
  {
    std::lock_guard<std::mutex> lk(mu_);
    n = ++counts_[reason];
  }
  if (n <= log_limit_) {
    spdlog::warn(
        "skipped {}: {}{}", where, message,
        n == log_limit_ ? " (further '" + reason + "' items are counted, not logged)" : "");
  }
}

int64_t SkipCounter::total() const {
  std::lock_guard<std::mutex> lk(mu_);
  int64_t t = 0;
  for (const auto& [r, n] : counts_) t += n;
  return t;
}

int64_t SkipCounter::count(const std::string& reason) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = counts_.find(reason);
  return it == counts_.end() ? 0 : it->second;
}

std::map<std::string, int64_t> SkipCounter::by_reason() const {
  std::lock_guard<std::mutex> lk(mu_);
  return counts_;
}

std::string SkipCounter::summary() const {
  const auto c = by_reason();
  int64_t t = 0;
  std::string parts;
  for (const auto& [r, n] : c) {
    t += n;
    parts += (parts.empty() ? "" : ", ") + r + ": " + std::to_string(n);
  }
  if (t == 0) return "none skipped";
  return std::to_string(t) + " skipped (" + parts + ")";
}

void SkipCounter::check(int64_t seen, double max_fraction, const std::string& what) const {
  const int64_t t = total();
  if (seen > 0 && static_cast<double>(t) > max_fraction * static_cast<double>(seen)) {
    throw DataError(what + ": " + summary() + " of " + std::to_string(seen) +
                    " items, more than the allowed fraction " + std::to_string(max_fraction) +
                    " (data.max_skip_fraction)");
  }
}

void SkipCounter::merge(const SkipCounter& other) {
  const auto c = other.by_reason();
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto& [r, n] : c) counts_[r] += n;
}

}  // namespace salad::data
