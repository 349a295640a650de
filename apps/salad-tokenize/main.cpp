// salad-tokenize: text lines on stdin -> one JSON array of ids per line on stdout (or the
// reverse with --decode); --train-spm trains a SentencePiece model on a corpus instead.
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/app.h"
#include "salad/text/sentencepiece_tokenizer.h"
#include "salad/text/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{"salad-tokenize: encode stdin lines to token ids (or decode with --decode)"};
  std::string tokenizer_path;
  bool jsonl = false, decode = false;
  std::string train_corpus;
  salad::text::SentencePieceTrainOptions train;
  app.add_option("--tokenizer,-t", tokenizer_path,
                 "tokenizer.json, SentencePiece .model or a folder (with --train-spm: the output "
                 "prefix, writing PREFIX.model and PREFIX.vocab)")
      ->required();
  app.add_option("--train-spm", train_corpus,
                 "Train a SentencePiece model on this UTF-8 corpus (one sentence a line)");
  app.add_option("--vocab-size", train.vocab_size, "--train-spm: vocabulary size");
  app.add_option("--model-type", train.model_type, "--train-spm: bpe | unigram | char | word");
  app.add_option("--spm-threads", train.num_threads, "--train-spm: trainer threads");
  app.add_flag("--jsonl", jsonl,
               "Input lines are JSON strings or objects with a \"text\" field (with --decode: "
               "output JSON strings)");
  app.add_flag("--decode,-d", decode, "Input lines are JSON arrays of ids; print the text");
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging({"warn"});
    if (!train_corpus.empty()) {
      salad::text::train_sentencepiece(train_corpus, tokenizer_path, train);
      const auto tok = salad::text::load_tokenizer(tokenizer_path + ".model");
      std::cout << "trained " << tokenizer_path << ".model: " << tok->vocab_size()
                << " pieces from " << train_corpus << "\n";
      return salad::kExitOk;
    }
    std::ios::sync_with_stdio(false);
    const auto tok = salad::text::load_tokenizer(tokenizer_path);
    std::string line;
    int64_t lineno = 0;
    std::string out;
    while (std::getline(std::cin, line)) {
      ++lineno;
      const std::string where = "stdin line " + std::to_string(lineno) + ": ";
      if (decode) {
        std::vector<int64_t> ids;
        try {
          ids = nlohmann::json::parse(line).get<std::vector<int64_t>>();
        } catch (const nlohmann::json::exception& e) {
          throw salad::DataError(where + "expected a JSON array of integer ids (" + e.what() + ")");
        }
        std::string text;
        try {
          text = tok->decode(ids);
        } catch (const salad::DataError& e) {
          throw salad::DataError(where + e.what());
        }
        out = jsonl ? nlohmann::json(text).dump(-1, ' ', false,
                                                nlohmann::json::error_handler_t::replace)
                    : text;
      } else {
        std::string text = line;
        if (jsonl) {
          try {
            const auto j = nlohmann::json::parse(line);
            if (j.is_string()) {
              text = j.get<std::string>();
            } else if (j.is_object() && j.contains("text") && j["text"].is_string()) {
              text = j["text"].get<std::string>();
            } else {
              throw salad::DataError(where +
                                     "expected a JSON string or an object with a string \"text\"");
            }
          } catch (const nlohmann::json::exception& e) {
            throw salad::DataError(where + "not valid JSON (" + e.what() + ")");
          }
        }
        out = nlohmann::json(tok->encode(text)).dump();
      }
      std::cout << out << '\n';
    }
    std::cout.flush();
    return salad::kExitOk;
  });
}
