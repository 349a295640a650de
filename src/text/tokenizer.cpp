#include "salad/text/tokenizer.h"

#include "salad/core/error.h"
#include "salad/text/bpe_tokenizer.h"
#include "salad/text/sentencepiece_tokenizer.h"

namespace salad::text {

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  if (fs::is_directory(path)) {
    if (fs::exists(path / "tokenizer.json")) return BpeTokenizer::load(path / "tokenizer.json");
    if (fs::exists(path / "tokenizer.model")) {
      return SentencePieceTokenizer::load(path / "tokenizer.model");
    }
    throw IoError(path.string() + ": no tokenizer.json or tokenizer.model in this folder");
  }
  if (!fs::exists(path)) throw IoError(path.string() + ": tokenizer file not found");
  const std::string ext = path.extension().string();
  if (ext == ".json") return BpeTokenizer::load(path);
  if (ext == ".model") return SentencePieceTokenizer::load(path);
  throw IoError(path.string() + ": unknown tokenizer type '" + ext +
                "' (expected a Hugging Face tokenizer.json or a SentencePiece .model)");
}

}  // namespace salad::text
