// data::Loader (see data/loader.h): the threads (the deterministic draw order of (source, item)
// pairs is in draw_order.h): workers that build items' documents in draw order and one packer that
// consumes them in that order, counts skips, enforces the skip threshold, packs rows into batches
// and records a resumable cursor with each batch. Options are checked in loader_options.cpp, the
// cursor's JSON and data identity are in loader_cursor.cpp, reading the sources and building one
// item's documents in loader_sources.cpp.
#include "salad/data/loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "data/draw_order.h"
#include "data/loader_sources.h"
#include "salad/core/blas_info.h"
#include "salad/core/error.h"
#include "salad/text/tokenizer.h"

namespace salad::data {

namespace ld = loader_detail;
using ld::Draw;
using ld::Drawer;
using ld::DrawState;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// What a loader stamps on its cursors.
struct Identity {
  std::map<std::string, std::string> values;
  std::string fingerprint;
};

LoaderCursor make_cursor(const LoaderOptions& o, const Identity& id, const DrawState& s,
                         int64_t skip_parts) {
  LoaderCursor c;
  c.sources = s.sources;
  c.draws = s.draws;
  c.skip_parts = skip_parts;
  c.seed = o.seed;
  c.rank = o.rank;
  c.world_size = o.world_size;
  c.fingerprint = id.fingerprint;
  c.identity = id.values;
  return c;
}

}  // namespace

// ---- Loader -------------------------------------------------------------------------------------

// Threads: `workers` threads take draws in order (the Drawer, under the lock) and build their
// documents concurrently into a ring of slots; one packer thread consumes the slots in draw order,
// so everything order-dependent (skip counts, packing, cursors, the threshold) is deterministic,
// and pushes batches into a queue of `prefetch`. Every wait also wakes on `stop`.
struct Loader::State {
  struct Result {
    enum Kind { kItem, kEnd, kError } kind = kItem;
    Draw draw;
    ld::BuiltItem built;
    std::exception_ptr error;
    double seconds = 0;
  };
  struct Ready {
    enum Kind { kBatch, kEnd, kError } kind = kBatch;
    Batch batch;
    LoaderCursor cursor;
    std::exception_ptr error;
  };

  State(const LoaderOptions& opts, std::vector<std::unique_ptr<ld::Source>> srcs, DrawState start,
        int64_t skip_parts, Identity id)
      : o(opts),
        sources(std::move(srcs)),
        identity(std::move(id)),
        drawer(opts, item_counts(sources), std::move(start)),
        first_skip_parts(skip_parts),
        ring(static_cast<size_t>(std::max<int64_t>(4 * o.workers, 16))) {
    build.tokenizer = o.tokenizer.get();
    build.features = &o.features;
    build.interleave = &o.interleave;
    build.context = o.pack.context;
    build.feature_dim = o.pack.feature_dim;
    build.codes = o.pack.codes;
    for (size_t i = 0; i < sources.size(); ++i) {
      names += (names.empty() ? "data sources '" : ", '") + sources[i]->spec().name + "'";
      shares.push_back(drawer.share(i));
      total_share += shares.back();
      read_skips.merge(sources[i]->read_skips());
    }
    last_cursor = make_cursor(o, identity, drawer.state(), skip_parts);
  }

  static std::vector<int64_t> item_counts(const std::vector<std::unique_ptr<ld::Source>>& s) {
    std::vector<int64_t> n;
    for (const auto& x : s) n.push_back(x->items());
    return n;
  }

  // Also reached when the Loader constructor fails after starting some threads.
  ~State() { shutdown(); }

  void start() {
    for (int64_t i = 0; i < o.workers; ++i) {
      threads.emplace_back([this] {
        use_one_op_thread_here();
        worker_loop();
      });
    }
    threads.emplace_back([this] {
      use_one_op_thread_here();
      pack_loop();
    });
  }

  void shutdown() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    work_cv.notify_all();
    slot_cv.notify_all();
    space_cv.notify_all();
    queue_cv.notify_all();
    for (std::thread& t : threads) t.join();
    threads.clear();
  }

  Result build_item(Draw d) const {
    const auto t0 = Clock::now();
    Result r;
    try {
      std::mt19937_64 rng(
          ld::hash_values({ld::kItemTag, o.seed, static_cast<uint64_t>(d.source),
                           static_cast<uint64_t>(d.epoch), static_cast<uint64_t>(d.item)}));
      r.built = sources[static_cast<size_t>(d.source)]->build(d.item, rng, build);
    } catch (...) {
      // Not bad data (that is a skip): a bug or a broken environment; next() rethrows it.
      r.kind = Result::kError;
      r.error = std::current_exception();
    }
    r.draw = std::move(d);
    r.seconds = seconds_since(t0);
    return r;
  }

  void worker_loop() {
    for (;;) {
      std::optional<Draw> d;
      int64_t seq;
      {
        std::unique_lock<std::mutex> lk(mu);
        work_cv.wait(lk, [&] {
          return stop || (!end_drawn && next_seq < consumed + static_cast<int64_t>(ring.size()));
        });
        if (stop) return;
        seq = next_seq++;
        Result r;
        try {
          d = drawer.next();
          if (!d) {
            r.kind = Result::kEnd;
            r.draw.before = drawer.state();
          }
        } catch (...) {
          r.kind = Result::kError;
          r.error = std::current_exception();
        }
        if (!d) {
          end_drawn = true;
          ring[slot(seq)] = std::move(r);
          slot_cv.notify_all();
          continue;
        }
      }
      Result r = build_item(std::move(*d));
      {
        std::lock_guard<std::mutex> lk(mu);
        ring[slot(seq)] = std::move(r);
      }
      slot_cv.notify_all();
    }
  }

  size_t slot(int64_t seq) const { return static_cast<size_t>(seq) % ring.size(); }

  /// Pushes a batch (waiting for room) or the final marker; false when stopping.
  bool push(Ready r) {
    std::unique_lock<std::mutex> lk(mu);
    if (r.kind == Ready::kBatch) {
      space_cv.wait(lk, [&] { return stop || static_cast<int64_t>(queue.size()) < o.prefetch; });
    }
    if (stop) return false;
    queue.push_back(std::move(r));
    queue_cv.notify_all();
    return true;
  }

  void add_busy(double s) {
    std::lock_guard<std::mutex> lk(mu);
    stats.produce_seconds += s;
  }

  void pack_loop() {
    try {
      pack_all();
    } catch (...) {
      Ready r;
      r.kind = Ready::kError;
      r.error = std::current_exception();
      push(std::move(r));
    }
  }

  void pack_all() {
    RowPacker packer(o.pack.context, o.rows);
    // The documents added but not yet emitted, in order, with the state before their item's
    // draw: the first of them is where a resumed loader must start.
    struct Pending {
      std::shared_ptr<const DrawState> before;
      int64_t part;
    };
    std::deque<Pending> pending;
    bool first = true;
    int64_t items_seen = 0;
    int64_t skipped_in_a_row = 0;
    std::vector<EpochTally> epochs(sources.size());
    double waited = 0;  // for room in the queue (not busy time)

    auto emit = [&](std::vector<std::vector<Document>> rows, LoaderCursor cursor) {
      Ready r;
      r.batch = make_batch(rows, o.pack);
      r.cursor = std::move(cursor);
      const auto t0 = Clock::now();
      const bool ok = push(std::move(r));
      waited += seconds_since(t0);
      return ok;
    };

    for (;;) {
      Result r;
      {
        std::unique_lock<std::mutex> lk(mu);
        slot_cv.wait(lk, [&] { return stop || ring[slot(consumed)].has_value(); });
        if (stop) return;
        r = std::move(*ring[slot(consumed)]);
        ring[slot(consumed)].reset();
        ++consumed;
      }
      work_cv.notify_all();
      const auto t0 = Clock::now();
      waited = 0;

      if (r.kind == Result::kError) std::rethrow_exception(r.error);
      if (r.kind == Result::kEnd) {
        check_skips(items_seen);
        std::vector<std::vector<Document>> rows = packer.flush();
        rows.erase(
            std::remove_if(rows.begin(), rows.end(), [](const auto& x) { return x.empty(); }),
            rows.end());
        if (!rows.empty() && !emit(std::move(rows), make_cursor(o, identity, r.draw.before, 0))) {
          return;
        }
        add_busy(seconds_since(t0) - waited);
        Ready end;
        end.kind = Ready::kEnd;
        end.cursor = make_cursor(o, identity, r.draw.before, 0);
        push(std::move(end));
        return;
      }

      ++items_seen;
      ld::BuiltItem& b = r.built;
      int64_t added = 0;
      EpochTally& epoch = epochs[static_cast<size_t>(r.draw.source)];
      ++epoch.items;
      if (!b.skip_reason.empty()) {
        stats.skipped.record(b.skip_reason, b.where, b.message);
        ++epoch.skipped[b.skip_reason];
        ++skipped_in_a_row;
      } else {
        ++epoch.usable;
        skipped_in_a_row = 0;
        const size_t start =
            first ? std::min(static_cast<size_t>(first_skip_parts), b.parts.size()) : 0;
        const auto before = std::make_shared<const DrawState>(r.draw.before);
        for (size_t p = start; p < b.parts.size(); ++p) {
          pending.push_back({before, static_cast<int64_t>(p)});
          packer.add(std::move(b.parts[p]));
          ++added;
          if (!packer.ready()) continue;
          std::vector<std::vector<Document>> rows = packer.take();
          for (const auto& row : rows) {
            for (size_t i = 0; i < row.size(); ++i) pending.pop_front();
          }
          const Pending* oldest = pending.empty() ? nullptr : &pending.front();
          LoaderCursor cursor = oldest ? make_cursor(o, identity, *oldest->before, oldest->part)
                                       : make_cursor(o, identity, r.draw.after, 0);
          if (!emit(std::move(rows), std::move(cursor))) return;
        }
      }
      first = false;
      {
        std::lock_guard<std::mutex> lk(mu);
        stats.items_seen = items_seen;
        stats.documents += added;
        stats.documents_split += b.split ? 1 : 0;
        stats.produce_seconds += r.seconds + seconds_since(t0) - waited;
      }
      if (r.draw.epoch_end) {
        check_epoch(r.draw, epoch);
        epoch = EpochTally{};
      }
      // The end of a non-repeating pass is checked when the drawer reports it (kEnd above).
      if (items_seen >= kSkipCheckFrom) check_skips(items_seen);
      if (skipped_in_a_row > 2 * total_share + kSkipCheckFrom) {
        throw DataError(names + ": no usable item among the last " +
                        std::to_string(skipped_in_a_row) + " drawn (" + stats.skipped.summary() +
                        ")");
      }
    }
  }

  void check_skips(int64_t items_seen) const {
    stats.skipped.check(items_seen, o.max_skip_fraction, names);
  }

  /// One source's items in its current epoch (or pass), as the packer saw them.
  struct EpochTally {
    int64_t items = 0;
    int64_t usable = 0;
    std::map<std::string, int64_t> skipped;  ///< per reason
  };

  /// A source whose whole epoch gave nothing is broken (all features missing, a wrong corpus
  /// format); with clean sources beside it the fraction may never reach the threshold. Only a
  /// whole epoch counts: a loader resumed in the middle of one has not seen its beginning.
  void check_epoch(const Draw& d, const EpochTally& t) const {
    const auto s = static_cast<size_t>(d.source);
    if (t.usable > 0 || t.items < shares[s]) return;
    std::string reasons;
    for (const auto& [reason, n] : t.skipped) {
      reasons += (reasons.empty() ? "" : ", ") + reason + ": " + std::to_string(n);
    }
    const SourceSpec& spec = sources[s]->spec();
    throw DataError("data source '" + spec.name + "' (" + spec.path.string() + "): none of the " +
                    std::to_string(t.items) + " items of its " +
                    (o.repeat ? "epoch " + std::to_string(d.epoch) : std::string("pass")) +
                    " for rank " + std::to_string(o.rank) + " was usable (" + reasons +
                    "); see the warnings above for the first of them");
  }

  static constexpr int64_t kSkipCheckFrom = 200;

  const LoaderOptions& o;
  std::vector<std::unique_ptr<ld::Source>> sources;
  Identity identity;  // stamped on every cursor
  ld::BuildContext build;
  std::string names;
  std::vector<int64_t> shares;  // items of each source per epoch for this rank
  int64_t total_share = 0;

  std::mutex mu;                     // guards everything below
  std::condition_variable work_cv;   // workers: a slot is free
  std::condition_variable slot_cv;   // packer: the next slot is filled
  std::condition_variable space_cv;  // packer: the queue has room
  std::condition_variable queue_cv;  // next(): the queue is not empty
  Drawer drawer;
  int64_t first_skip_parts = 0;
  bool stop = false;
  bool end_drawn = false;
  int64_t next_seq = 0;  // draws handed to workers
  int64_t consumed = 0;  // draws taken by the packer
  std::vector<std::optional<Result>> ring;
  std::deque<Ready> queue;
  LoaderCursor last_cursor;
  LoaderStats stats;       // stats.skipped (item skips; has its own lock)
  SkipCounter read_skips;  // manifest lines skipped when reading (checked by read_manifest)
  std::vector<std::thread> threads;
};

Loader::Loader(LoaderOptions o, const LoaderCursor& start) : o_(std::move(o)) {
  o_.validate();
  std::vector<std::unique_ptr<ld::Source>> sources;
  for (const SourceSpec& spec : o_.sources) {
    sources.push_back(ld::Source::open(spec, o_.utterance_group, o_.max_skip_fraction));
  }
  const std::vector<int64_t> counts = State::item_counts(sources);
  Identity identity;
  identity.values = ld::data_identity(o_, counts);
  identity.fingerprint = ld::fingerprint_of(identity.values);
  // The draw state to start from: the beginning, or a checkpoint's cursor made by a loader
  // with the same identity (another seed, rank, source list, item count or packing would visit
  // or build other items).
  DrawState state;
  state.sources.resize(o_.sources.size());
  if (!start.sources.empty()) {
    const std::string hint =
        " (resume with the same data sources, data.* options, run.seed and ranks)";
    auto differs = [&](const std::string& what, const std::string& saved, const std::string& now) {
      throw CheckpointError("data loader cursor was made with " + what + " " + saved +
                            " but this run has " + what + " " + now + hint);
    };
    if (start.sources.size() != o_.sources.size()) {
      differs("number of data sources", std::to_string(start.sources.size()),
              std::to_string(o_.sources.size()));
    }
    if (start.seed != o_.seed) differs("seed", std::to_string(start.seed), std::to_string(o_.seed));
    if (start.rank != o_.rank) differs("rank", std::to_string(start.rank), std::to_string(o_.rank));
    if (start.world_size != o_.world_size) {
      differs("world size", std::to_string(start.world_size), std::to_string(o_.world_size));
    }
    if (start.fingerprint != identity.fingerprint) {
      std::string changes = ld::identity_changes(start.identity, identity.values);
      if (changes.empty()) changes = "the saved cursor does not list its values";
      throw CheckpointError(
          "data loader cursor: the data sources or loader options changed since the cursor was "
          "saved: " +
          changes + " (fingerprint " + (start.fingerprint.empty() ? "none" : start.fingerprint) +
          " then, " + identity.fingerprint + " now)" + hint);
    }
    state.sources = start.sources;
    state.draws = start.draws;
  }
  {
    Drawer probe(o_, counts, state);
    for (size_t i = 0; i < sources.size(); ++i) {
      const SourceSpec& spec = o_.sources[i];
      const int64_t share = probe.share(i);
      if (o_.repeat && share == 0) {
        throw ConfigError("data source '" + spec.name + "' (" + spec.path.string() + ") has " +
                          std::to_string(counts[i]) + " items: none for rank " +
                          std::to_string(o_.rank) + " of " + std::to_string(o_.world_size) +
                          " (use more data or fewer ranks)");
      }
      const SourceCursor& c = state.sources[i];
      const int64_t limit = o_.repeat ? share - 1 : share;
      if (c.epoch < 0 || c.index < 0 || c.index > limit || (!o_.repeat && c.epoch != 0)) {
        throw CheckpointError("data loader cursor of source '" + spec.name + "' is at epoch " +
                              std::to_string(c.epoch) + ", index " + std::to_string(c.index) +
                              " but the source has " + std::to_string(share) +
                              " items for this rank (did " + spec.path.string() + " change?)");
      }
      spdlog::info("data: source '{}' ({}, weight {}): {} from {}; rank {}/{} visits {} per {}",
                   spec.name, spec.kind, spec.weight, sources[i]->describe(), spec.path.string(),
                   o_.rank, o_.world_size, share, o_.repeat ? "epoch" : "pass");
    }
  }
  if (start.draws < 0 || start.skip_parts < 0) {
    throw CheckpointError("data loader cursor has negative draws or skip_parts");
  }
  s_ = std::make_unique<State>(o_, std::move(sources), std::move(state),
                               start.sources.empty() ? 0 : start.skip_parts, std::move(identity));
  s_->start();
}

Loader::~Loader() = default;  // ~State stops and joins the threads

std::optional<Batch> Loader::next() {
  State& s = *s_;
  std::unique_lock<std::mutex> lk(s.mu);
  const auto t0 = Clock::now();
  s.queue_cv.wait(lk, [&] { return !s.queue.empty(); });
  s.stats.wait_seconds += seconds_since(t0);
  State::Ready& front = s.queue.front();
  // The end and errors stay at the front: every later call sees them too.
  if (front.kind == State::Ready::kError) std::rethrow_exception(front.error);
  if (front.kind == State::Ready::kEnd) {
    s.last_cursor = front.cursor;
    return std::nullopt;
  }
  Batch b = std::move(front.batch);
  s.last_cursor = std::move(front.cursor);
  s.queue.pop_front();
  ++s.stats.batches;
  lk.unlock();
  s.space_cv.notify_all();
  return b;
}

LoaderCursor Loader::cursor() const {
  std::lock_guard<std::mutex> lk(s_->mu);
  return s_->last_cursor;
}

LoaderStats Loader::stats() const {
  std::lock_guard<std::mutex> lk(s_->mu);
  LoaderStats st = s_->stats;
  // Reported with the items' skips; the threshold compares item skips with items seen only
  // (read_manifest already compared bad lines with lines).
  st.skipped.merge(s_->read_skips);
  return st;
}

}  // namespace salad::data
