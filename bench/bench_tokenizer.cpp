// Encoding throughput of BpeTokenizer on a text file: MB/s (1 MB = 10^6 bytes of input) and
// tokens/s, per word-cache flavour; one thread unless --threads. Each line of the file is one
// encode() call (sotu.txt: one line per address). Run through scripts/bench_tokenizer.sh.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "salad/core/error.h"
#include "salad/text/bpe_tokenizer.h"

namespace {

using salad::text::BpeTokenizer;
using salad::text::BpeTokenizerOptions;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Pass {
  double seconds;
  std::size_t tokens;
};

// Encodes every line once, split over `threads` threads (line i on thread i % threads).
Pass encode_all(const BpeTokenizer& tok, const std::vector<std::string>& lines, int threads) {
  std::vector<std::size_t> counts(threads, 0);
  const auto t0 = Clock::now();
  const auto work = [&](int t) {
    for (std::size_t i = t; i < lines.size(); i += threads) {
      counts[t] += tok.encode(lines[i]).size();
    }
  };
  if (threads == 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(work, t);
    for (auto& th : pool) th.join();
  }
  const double s = seconds_since(t0);
  std::size_t n = 0;
  for (auto c : counts) n += c;
  return {s, n};
}

int usage() {
  std::fprintf(stderr,
               "usage: salad_bench_tokenizer TOKENIZER_JSON TEXT_FILE [--reps N] [--threads N] "
               "[--cache all|none|sharded|thread_local] [--cache-capacity WORDS] "
               "[--heap-merge-min-bytes N]\n"
               "       [--ids-out FILE]\n"
               "  --ids-out: also write the ids of each line, space-separated, one line each\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string tokenizer_json = argv[1], text_file = argv[2];
  int reps = 5, threads = 1;
  std::string cache = "all", ids_out;
  std::size_t capacity = BpeTokenizerOptions{}.cache_capacity;
  std::size_t heap_min = BpeTokenizerOptions{}.heap_merge_min_bytes;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--cache" && i + 1 < argc) {
      cache = argv[++i];
    } else if (a == "--cache-capacity" && i + 1 < argc) {
      capacity = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--heap-merge-min-bytes" && i + 1 < argc) {
      heap_min = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--ids-out" && i + 1 < argc) {
      ids_out = argv[++i];
    } else {
      return usage();
    }
  }
  try {
    std::ifstream in(text_file, std::ios::binary);
    if (!in) throw salad::IoError(text_file + ": cannot open");
    std::ostringstream ss;
    ss << in.rdbuf();
    const std::string text = std::move(ss).str();
    std::vector<std::string> lines;
    std::istringstream ls(text);
    for (std::string line; std::getline(ls, line);) lines.push_back(line + "\n");
    std::printf("text: %s, %.2f MB in %zu lines; threads %d, best of %d warm passes\n",
                text_file.c_str(), text.size() / 1e6, lines.size(), threads, reps);

    if (!ids_out.empty()) {  // for comparing with another implementation; not timed
      const auto tok = BpeTokenizer::load(tokenizer_json);
      std::ofstream out(ids_out, std::ios::binary);
      for (const auto& line : lines) {
        const auto ids = tok->encode(line);
        for (std::size_t k = 0; k < ids.size(); ++k) out << (k ? " " : "") << ids[k];
        out << '\n';
      }
      if (!out) throw salad::IoError(ids_out + ": write failed");
    }

    using Cache = BpeTokenizerOptions::Cache;
    std::vector<std::pair<std::string, Cache>> kinds;
    for (const auto& [name, kind] :
         std::vector<std::pair<std::string, Cache>>{{"thread_local", Cache::kThreadLocal},
                                                    {"sharded", Cache::kSharded},
                                                    {"none", Cache::kNone}}) {
      if (cache == "all" || cache == name) kinds.emplace_back(name, kind);
    }
    if (kinds.empty()) return usage();
    for (const auto& [name, kind] : kinds) {
      BpeTokenizerOptions options;
      options.cache = kind;
      options.cache_capacity = capacity;
      options.heap_merge_min_bytes = heap_min;
      const auto t0 = Clock::now();
      const auto tok = BpeTokenizer::load(tokenizer_json, options);
      const double load_s = seconds_since(t0);
      const Pass cold = encode_all(*tok, lines, threads);  // empty cache
      Pass best = cold;
      for (int r = 0; r < reps; ++r) {
        const Pass p = encode_all(*tok, lines, threads);
        if (p.seconds < best.seconds) best = p;
      }
      const double mb = text.size() / 1e6;
      std::printf(
          "cache %-12s load %.2f s | first pass %7.2f MB/s | best %7.2f MB/s  %6.2f M tokens/s  "
          "(%zu tokens, %.2f bytes/token)\n",
          name.c_str(), load_s, mb / cold.seconds, mb / best.seconds,
          best.tokens / best.seconds / 1e6, best.tokens,
          static_cast<double>(text.size()) / best.tokens);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "salad_bench_tokenizer: %s\n", e.what());
    return salad::exit_code(e);
  }
  return 0;
}
