// salad-perplexity: perplexity and per-token log-probabilities of a text file or of
// pre-tokenized sequences under a Hugging Face Qwen2 checkpoint; the quick check that a
// checkpoint loaded right.
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/app.h"
#include "salad/core/blas_info.h"
#include "salad/models/qwen2.h"
#include "salad/text/tokenizer.h"

namespace {

// Log-probability of each next token of `ids` [T] (positions 1..T-1), computed in chunks of
// positions so that no [T, V] float32 log-softmax is held at once.
std::vector<double> score(salad::models::Qwen2& model, const std::vector<int64_t>& ids) {
  std::vector<double> out;
  if (ids.size() < 2) return out;
  torch::NoGradGuard ng;
  salad::models::Qwen2Input in;
  in.input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);   // [1, T]
  const at::Tensor hidden = model->forward_hidden(in).hidden[0];  // [T, D]
  const int64_t n = hidden.size(0) - 1;
  const at::Tensor targets = in.input_ids[0].slice(0, 1);  // [T-1]
  constexpr int64_t kChunk = 256;
  for (int64_t s = 0; s < n; s += kChunk) {
    const int64_t len = std::min(kChunk, n - s);
    const at::Tensor lp = model->logits(hidden.narrow(0, s, len)).to(at::kFloat).log_softmax(-1);
    const at::Tensor picked =
        lp.gather(1, targets.narrow(0, s, len).unsqueeze(1)).squeeze(1).to(at::kDouble);
    const double* p = picked.data_ptr<double>();
    out.insert(out.end(), p, p + len);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"salad-perplexity: perplexity of a text or token ids under a Qwen2 checkpoint"};
  std::string model_dir, tokenizer_path, text_path, ids_path, dump_path, dtype = "fp32";
  int64_t context = 0;
  int threads = 0;
  app.add_option("--model,-m", model_dir,
                 "Hugging Face checkpoint folder (config.json, safetensors)")
      ->required();
  app.add_option("--tokenizer,-t", tokenizer_path,
                 "tokenizer.json / .model (default: the model folder's)");
  auto* text_opt =
      app.add_option("--text", text_path, "UTF-8 text file, scored in windows of --context tokens");
  auto* ids_opt =
      app.add_option("--ids", ids_path, "JSONL: one JSON array of ids per line, each one sequence");
  text_opt->excludes(ids_opt);
  app.add_option("--context", context,
                 "Window for --text (default: min(1024, max_position_embeddings))");
  app.add_option("--dump-logprobs", dump_path, "Write {\"logprobs\":[...]} per sequence (JSONL)");
  app.add_option("--dtype", dtype, "fp32 | bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--threads", threads, "Intra-op threads (0: every available CPU)");
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging();
    if (text_path.empty() == ids_path.empty()) {
      std::cerr << "salad-perplexity: give --text or --ids\n";
      return salad::kExitUsage;
    }
    salad::configure_threads(threads);
    salad::log_blas_info();
    auto model = salad::models::load_qwen2(model_dir, salad::models::parse_dtype(dtype));
    model->eval();
    const auto& o = model->options();
    spdlog::info("loaded {}: {} layers, width {}, vocab {}", model_dir, o.num_hidden_layers,
                 o.hidden_size, o.vocab_size);

    std::vector<std::vector<int64_t>> sequences;
    if (!ids_path.empty()) {
      std::ifstream in(ids_path);
      if (!in) throw salad::IoError(ids_path + ": cannot open");
      std::string line;
      for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        std::vector<int64_t> ids;
        try {
          ids = nlohmann::json::parse(line).get<std::vector<int64_t>>();
        } catch (const nlohmann::json::exception& e) {
          throw salad::DataError(ids_path + ":" + std::to_string(lineno) +
                                 ": expected a JSON array of integer ids (" + e.what() + ")");
        }
        for (int64_t id : ids) {
          if (id < 0 || id >= o.vocab_size) {
            throw salad::DataError(ids_path + ":" + std::to_string(lineno) + ": id " +
                                   std::to_string(id) + " is outside the vocabulary [0, " +
                                   std::to_string(o.vocab_size) + ")");
          }
        }
        sequences.push_back(std::move(ids));
      }
    } else {
      const auto tok =
          salad::text::load_tokenizer(tokenizer_path.empty() ? model_dir : tokenizer_path);
      std::ifstream in(text_path, std::ios::binary);
      if (!in) throw salad::IoError(text_path + ": cannot open");
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      const auto ids = tok->encode(text);
      for (int64_t id : ids) {
        if (id < 0 || id >= o.vocab_size) {
          throw salad::DataError("the tokenizer gives id " + std::to_string(id) +
                                 ", outside the model's vocabulary [0, " +
                                 std::to_string(o.vocab_size) +
                                 "): the tokenizer does not belong to this model");
        }
      }
      const int64_t window =
          context > 0 ? context : std::min<int64_t>(1024, o.max_position_embeddings);
      for (size_t s = 0; s < ids.size(); s += window) {
        sequences.emplace_back(ids.begin() + s, ids.begin() + std::min(ids.size(), s + window));
      }
      spdlog::info("{}: {} tokens in {} windows of {}", text_path, ids.size(), sequences.size(),
                   window);
    }

    std::ofstream dump;
    if (!dump_path.empty()) {
      dump.open(dump_path);
      if (!dump) throw salad::IoError(dump_path + ": cannot write");
    }
    double total = 0;
    int64_t count = 0;
    for (const auto& seq : sequences) {
      const auto lp = score(model, seq);
      for (double x : lp) total += x;
      count += static_cast<int64_t>(lp.size());
      if (dump) dump << nlohmann::json{{"logprobs", lp}}.dump() << '\n';
    }
    if (count == 0)
      throw salad::DataError("nothing to score: every sequence has fewer than 2 tokens");
    const double nll = -total / static_cast<double>(count);
    std::cout << "perplexity " << std::exp(nll) << " over " << count << " tokens in "
              << sequences.size() << " sequences (mean NLL " << nll << " nats)\n";
    return salad::kExitOk;
  });
}
