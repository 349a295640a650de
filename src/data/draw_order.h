// The deterministic draw order of data::Loader (see data/loader.h): which source and which item
// of it comes next, as a function of the seed, the rank and the draw count only, so a cursor
// resumes it exactly. Private to loader.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "data/loader_sources.h"
#include "salad/data/loader.h"

namespace salad::data::loader_detail {

/// Where the drawing is: LoaderCursor without the identity fields.
struct DrawState {
  std::vector<SourceCursor> sources;
  int64_t draws = 0;
};

struct Draw {
  int source = 0;
  int64_t epoch = 0;
  int64_t item = 0;  ///< index into the source's items (file order)
  DrawState before;  ///< the state right before this draw
  DrawState after;
  bool epoch_end = false;  ///< this draw finished the source's epoch (or its single pass)
};

/// The deterministic sequence of (source, item) draws. Not thread-safe (the loader locks).
class Drawer {
 public:
  Drawer(const LoaderOptions& o, std::vector<int64_t> items, DrawState start)
      : o_(o), items_(std::move(items)), state_(std::move(start)), perms_(items_.size()) {
    double total = 0;
    for (const SourceSpec& s : o_.sources) cumulative_.push_back(total += s.weight);
  }

  /// Items of source s that this rank visits per epoch: positions rank, rank + W, ...
  int64_t share(size_t s) const {
    const int64_t n = items_[s];
    return n > o_.rank ? (n - o_.rank + o_.world_size - 1) / o_.world_size : 0;
  }
  const DrawState& state() const { return state_; }

  /// The next draw; nullopt at the end of a single pass (repeat=false).
  std::optional<Draw> next() {
    Draw d;
    d.before = state_;
    if (o_.repeat) {
      d.source = choose(state_.draws);
    } else {
      size_t s = 0;
      while (s < items_.size() && state_.sources[s].index >= share(s)) ++s;
      if (s == items_.size()) return std::nullopt;
      d.source = static_cast<int>(s);
    }
    const auto s = static_cast<size_t>(d.source);
    SourceCursor& c = state_.sources[s];
    d.epoch = c.epoch;
    const int64_t position = o_.rank + c.index * o_.world_size;
    d.item = o_.repeat ? order(s, c.epoch)[static_cast<size_t>(c.index)] : position;
    ++c.index;
    ++state_.draws;
    if (c.index >= share(s)) {
      d.epoch_end = true;
      if (o_.repeat) {
        ++c.epoch;
        c.index = 0;
      }
    }
    d.after = state_;
    return d;
  }

 private:
  int choose(int64_t k) const {
    const double x = unit_double(hash_values({kMixTag, o_.seed, static_cast<uint64_t>(o_.rank),
                                              static_cast<uint64_t>(k)})) *
                     cumulative_.back();
    for (size_t s = 0; s < cumulative_.size(); ++s) {
      if (x < cumulative_[s]) return static_cast<int>(s);
    }
    return static_cast<int>(cumulative_.size()) - 1;
  }

  /// This rank's share of the epoch's permutation of source s (every rank computes the same
  /// permutation, so the shares are disjoint and cover the epoch).
  const std::vector<int64_t>& order(size_t s, int64_t epoch) {
    Perm& p = perms_[s];
    if (p.epoch != epoch) {
      const std::vector<int64_t> all =
          permutation(items_[s], hash_values({kPermutationTag, o_.seed, static_cast<uint64_t>(s),
                                              static_cast<uint64_t>(epoch)}));
      p.share.clear();
      for (size_t i = static_cast<size_t>(o_.rank); i < all.size();
           i += static_cast<size_t>(o_.world_size)) {
        p.share.push_back(all[i]);
      }
      p.epoch = epoch;
    }
    return p.share;
  }

  struct Perm {
    int64_t epoch = -1;
    std::vector<int64_t> share;
  };
  const LoaderOptions& o_;
  std::vector<int64_t> items_;
  DrawState state_;
  std::vector<double> cumulative_;
  std::vector<Perm> perms_;
};

}  // namespace salad::data::loader_detail
