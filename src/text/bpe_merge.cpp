// BPE merging (the merge table, the by-rank merge of one word) and the word cache of
// BpeTokenizer. The rest of the encode pipeline is in bpe_encode.cpp.
#include <algorithm>
#include <atomic>

#include "text/bpe_internal.h"

namespace salad::text::bpe {
// ---- Merges ---------------------------------------------------------------------------------

void MergeMap::reserve(std::size_t n) {
  std::size_t cap = 16;
  int bits = 4;
  while (cap < 2 * n) cap <<= 1, ++bits;
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  shift_ = 64 - bits;
  size_ = 0;
}

void MergeMap::insert(int32_t left, int32_t right, int32_t rank, int32_t id) {
  const uint64_t key = pack(left, right);
  for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == kEmpty) ++size_;
    if (s.key == kEmpty || s.key == key) {
      s = Slot{key, rank, id};
      return;
    }
  }
}

// ---- BPE ------------------------------------------------------------------------------------

namespace {

// A linear scan for the best pair after each merge: O(n^2) but with tiny constants.
void merge_by_scan(const MergeMap& merges, BpeScratch& s, std::size_t n,
                   std::vector<int32_t>& out) {
  auto& syms = s.syms;
  auto& ranks = s.ranks;  // ranks[i]: the pair (i, i + 1)
  auto& merged = s.merged;
  ranks.resize(n);
  merged.resize(n);
  for (std::size_t i = 0; i + 1 < n; ++i) {
    const auto v = merges.find(syms[i], syms[i + 1]);
    ranks[i] = v.rank;
    merged[i] = v.id;
  }
  std::size_t m = n;
  while (m > 1) {
    std::size_t best = 0;
    int32_t best_rank = ranks[0];
    for (std::size_t i = 1; i + 1 < m; ++i) {
      if (ranks[i] < best_rank) best_rank = ranks[i], best = i;
    }
    if (best_rank == MergeMap::kNoRank) break;
    syms[best] = merged[best];
    for (std::size_t i = best + 1; i + 1 < m; ++i) {
      syms[i] = syms[i + 1];
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --m;
    if (best > 0) {
      const auto v = merges.find(syms[best - 1], syms[best]);
      ranks[best - 1] = v.rank;
      merged[best - 1] = v.id;
    }
    if (best + 1 < m) {
      const auto v = merges.find(syms[best], syms[best + 1]);
      ranks[best] = v.rank;
      merged[best] = v.id;
    }
  }
  out.insert(out.end(), syms.begin(), syms.begin() + static_cast<std::ptrdiff_t>(m));
}

// A linked list of symbols and a min-heap of candidate pairs (rank, then position); stale
// candidates are skipped when popped. O(n log n) for long words.
void merge_by_heap(const MergeMap& merges, BpeScratch& s, std::size_t n,
                   std::vector<int32_t>& out) {
  using Candidate = BpeScratch::Candidate;
  auto& nodes = s.nodes;
  auto& heap = s.heap;
  nodes.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    nodes[i] = {s.syms[i], static_cast<int32_t>(i) - 1,
                i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  }
  const auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  const auto candidate = [&](int32_t left) {
    const int32_t right = nodes[left].next;
    if (right < 0) return;
    const auto v = merges.find(nodes[left].id, nodes[right].id);
    if (v.rank == MergeMap::kNoRank) return;
    heap.push_back({v.rank, left, right, nodes[left].id, nodes[right].id, v.id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  heap.clear();
  for (std::size_t i = 0; i + 1 < n; ++i) candidate(static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate c = heap.back();
    heap.pop_back();
    auto& left = nodes[c.pos];
    if (left.id != c.left_id || left.next != c.right || nodes[c.right].id != c.right_id) continue;
    auto& right = nodes[c.right];
    left.id = c.merged_id;
    left.next = right.next;
    if (right.next >= 0) nodes[right.next].prev = c.pos;
    right.id = -1;
    if (left.prev >= 0) candidate(left.prev);
    candidate(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = nodes[i].next) out.push_back(nodes[i].id);
}

}  // namespace

void bpe_merge(const MergeMap& merges, const std::array<int32_t, 256>& byte_ids,
               std::string_view word, std::size_t heap_min_bytes, BpeScratch& scratch,
               std::vector<int32_t>& out) {
  const std::size_t n = word.size();
  if (n == 0) return;
  if (n == 1) {
    out.push_back(byte_ids[static_cast<unsigned char>(word[0])]);
    return;
  }
  scratch.syms.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    scratch.syms[i] = byte_ids[static_cast<unsigned char>(word[i])];
  }
  if (n < heap_min_bytes) {
    merge_by_scan(merges, scratch, n, out);
  } else {
    merge_by_heap(merges, scratch, n, out);
  }
}

// ---- Word cache -----------------------------------------------------------------------------

WordTable::WordTable(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 16)) {
  std::size_t slots = 16;
  while (slots < 2 * capacity_) slots <<= 1;
  slots_.assign(slots, Slot{});
  mask_ = slots - 1;
}

bool WordTable::lookup(std::string_view word, uint64_t hash, std::vector<int64_t>& out) const {
  for (std::size_t i = hash & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.n_ids == 0) return false;
    if (s.hash == hash && s.key_len == word.size() &&
        same_bytes(arena_.data() + s.offset, word.data(), word.size())) {
      const char* ids = arena_.data() + s.offset + s.key_len;
      for (std::size_t k = 0; k < s.n_ids; ++k) {
        int32_t id;
        std::memcpy(&id, ids + 4 * k, 4);
        out.push_back(id);
      }
      return true;
    }
  }
}

void WordTable::insert(std::string_view word, uint64_t hash, const std::vector<int32_t>& ids) {
  if (ids.empty() || ids.size() > 0xFFFF || word.size() > 0xFFFF) return;
  if (size_ >= capacity_ || arena_.size() > 0xF0000000u) clear();
  for (std::size_t i = hash & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.n_ids == 0) {
      s = Slot{hash, static_cast<uint32_t>(arena_.size()), static_cast<uint16_t>(word.size()),
               static_cast<uint16_t>(ids.size())};
      arena_.append(word);
      arena_.append(reinterpret_cast<const char*>(ids.data()), 4 * ids.size());
      ++size_;
      return;
    }
    if (s.hash == hash && s.key_len == word.size() &&
        same_bytes(arena_.data() + s.offset, word.data(), word.size())) {
      return;  // another thread's run got there first (sharded) - same ids
    }
  }
}

void WordTable::clear() {
  std::fill(slots_.begin(), slots_.end(), Slot{});
  arena_.clear();
  size_ = 0;
}

namespace {

std::atomic<uint64_t> next_cache_instance{1};

// kThreadLocal tables of the tokenizers this thread used lately, keyed by instance number (never
// reused, so a new tokenizer at a freed one's address cannot see stale ids). At most a few
// are kept: a destroyed tokenizer's table is dropped when newer ones push it out.
constexpr std::size_t kTablesPerThread = 4;
thread_local std::vector<std::pair<uint64_t, std::unique_ptr<WordTable>>> tls_tables;

}  // namespace

WordCache::WordCache(const BpeTokenizerOptions& options)
    : kind_(options.cache), capacity_(options.cache_capacity), instance_(next_cache_instance++) {
  if (kind_ == BpeTokenizerOptions::Cache::kSharded) {
    shards_ = std::make_unique<Shard[]>(kShards);
    for (int i = 0; i < kShards; ++i) {
      shards_[i].table =
          std::make_unique<WordTable>(std::max<std::size_t>(capacity_ / kShards, 64));
    }
  }
}

WordCache::~WordCache() = default;

WordCache::Session WordCache::session() const {
  Session s;
  s.cache_ = this;
  if (kind_ == BpeTokenizerOptions::Cache::kThreadLocal) {
    for (auto it = tls_tables.begin(); it != tls_tables.end(); ++it) {
      if (it->first == instance_) {
        s.local_ = it->second.get();
        return s;
      }
    }
    if (tls_tables.size() >= kTablesPerThread) tls_tables.erase(tls_tables.begin());
    tls_tables.emplace_back(instance_, std::make_unique<WordTable>(capacity_));
    s.local_ = tls_tables.back().second.get();
  }
  return s;
}

bool WordCache::Session::lookup(std::string_view word, uint64_t hash,
                                std::vector<int64_t>& out) const {
  if (local_) return local_->lookup(word, hash, out);
  if (cache_->kind_ != BpeTokenizerOptions::Cache::kSharded) return false;
  Shard& shard = cache_->shards_[hash >> 60];
  std::lock_guard<std::mutex> lock(shard.mutex);
  return shard.table->lookup(word, hash, out);
}

void WordCache::Session::insert(std::string_view word, uint64_t hash,
                                const std::vector<int32_t>& ids) const {
  if (local_) return local_->insert(word, hash, ids);
  if (cache_->kind_ != BpeTokenizerOptions::Cache::kSharded) return;
  Shard& shard = cache_->shards_[hash >> 60];
  std::lock_guard<std::mutex> lock(shard.mutex);
  shard.table->insert(word, hash, ids);
}

}  // namespace salad::text::bpe
