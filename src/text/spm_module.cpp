// libsalad_spm.so: the only code that links libsentencepiece. See spm_module_api.h for why it is
// a separate module and for the calling conventions. Everything here is compiled with hidden
// visibility except the extern "C" entry points.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <locale>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "text/spm_module_api.h"

#define SALAD_SPM_EXPORT extern "C" __attribute__((visibility("default")))

struct SaladSpmModel {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

namespace spm = sentencepiece;

void report(SaladSpmBytesSink err, void* err_ctx, std::string_view message) {
  if (err) err(err_ctx, message.data(), message.size());
}

void report(SaladSpmBytesSink err, void* err_ctx, const spm::util::Status& status) {
  report(err, err_ctx, status.ToString());
}

// Runs `body` and turns any C++ exception into an error report: none may cross the C boundary.
template <class F>
int guarded(SaladSpmBytesSink err, void* err_ctx, F&& body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    report(err, err_ctx, std::string("sentencepiece module: ") + e.what());
  } catch (...) {
    report(err, err_ctx, "sentencepiece module: unknown exception");
  }
  return -1;
}

// Feeds the trainer from the caller's line source instead of sentencepiece's own file reader,
// so the caller controls reading (and UTF-8 repair) and the corpus path never has to pass
// through sentencepiece's comma-separated `input` flag.
class SourceIterator final : public spm::SentenceIterator {
 public:
  SourceIterator(SaladSpmLineSource source, void* ctx) : source_(source), ctx_(ctx) { Next(); }

  bool done() const override { return done_; }
  const std::string& value() const override { return value_; }
  spm::util::Status status() const override { return status_; }

  void Next() override {
    const char* data = nullptr;
    size_t size = 0;
    const int r = source_(ctx_, &data, &size);
    if (r == 1) {
      value_.assign(data, size);
      return;
    }
    done_ = true;
    value_.clear();
    if (r != 0) status_ = spm::util::Status(spm::util::StatusCode::kDataLoss, "corpus read error");
  }

 private:
  SaladSpmLineSource source_;
  void* ctx_;
  std::string value_;
  bool done_ = false;
  spm::util::Status status_;
};

// The .vocab text exactly as sentencepiece's trainer writes it: "piece<TAB>score" per line,
// the score formatted by a default (classic-locale) ostream.
std::string vocab_text(const spm::SentencePieceProcessor& sp) {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    os << sp.IdToPiece(id) << '\t' << sp.GetScore(id) << '\n';
  }
  return os.str();
}

// sentencepiece's seed and log level are process-wide; one training at a time.
std::mutex g_train_mutex;

}  // namespace

SALAD_SPM_EXPORT int salad_spm_abi_version(void) { return SALAD_SPM_ABI_VERSION; }

SALAD_SPM_EXPORT SaladSpmModel* salad_spm_load(const char* data, size_t size, SaladSpmBytesSink err,
                                               void* err_ctx) {
  SaladSpmModel* result = nullptr;
  guarded(err, err_ctx, [&] {
    auto model = std::make_unique<SaladSpmModel>();
    const auto status = model->processor.LoadFromSerializedProto(std::string_view(data, size));
    if (!status.ok()) {
      report(err, err_ctx, status);
      return -1;
    }
    if (model->processor.GetPieceSize() <= 0) {
      report(err, err_ctx, "the model has no pieces");
      return -1;
    }
    result = model.release();
    return 0;
  });
  return result;
}

SALAD_SPM_EXPORT void salad_spm_free(SaladSpmModel* model) { delete model; }

SALAD_SPM_EXPORT int salad_spm_encode(const SaladSpmModel* model, const char* text, size_t size,
                                      SaladSpmIdsSink out, void* out_ctx, SaladSpmBytesSink err,
                                      void* err_ctx) {
  return guarded(err, err_ctx, [&] {
    std::vector<int> ids;
    const auto status = model->processor.Encode(std::string_view(text, size), &ids);
    if (!status.ok()) {
      report(err, err_ctx, status);
      return -1;
    }
    static_assert(sizeof(int) == sizeof(int32_t));
    out(out_ctx, reinterpret_cast<const int32_t*>(ids.data()), ids.size());
    return 0;
  });
}

SALAD_SPM_EXPORT int salad_spm_decode(const SaladSpmModel* model, const int32_t* ids, size_t count,
                                      SaladSpmBytesSink out, void* out_ctx, SaladSpmBytesSink err,
                                      void* err_ctx) {
  return guarded(err, err_ctx, [&] {
    const std::vector<int> v(ids, ids + count);
    std::string text;
    const auto status = model->processor.Decode(v, &text);
    if (!status.ok()) {
      report(err, err_ctx, status);
      return -1;
    }
    out(out_ctx, text.data(), text.size());
    return 0;
  });
}

SALAD_SPM_EXPORT int salad_spm_vocab_size(const SaladSpmModel* model) {
  return model->processor.GetPieceSize();
}

SALAD_SPM_EXPORT int salad_spm_id_to_piece(const SaladSpmModel* model, int id, const char** data,
                                           size_t* size) {
  if (id < 0 || id >= model->processor.GetPieceSize()) return -1;
  const std::string& piece = model->processor.IdToPiece(id);
  *data = piece.data();
  *size = piece.size();
  return 0;
}

SALAD_SPM_EXPORT int salad_spm_piece_to_id(const SaladSpmModel* model, const char* piece,
                                           size_t size) {
  const std::string_view p(piece, size);
  const auto& sp = model->processor;
  // PieceToId answers unk_id for an unknown piece; only the unknown piece itself may map there.
  const int id = sp.PieceToId(p);
  if (id < 0 || id >= sp.GetPieceSize() || sp.IdToPiece(id) != p) return -1;
  return id;
}

SALAD_SPM_EXPORT int salad_spm_special_id(const SaladSpmModel* model, int which) {
  const auto& sp = model->processor;
  switch (which) {
    case kSaladSpmUnk:
      return sp.unk_id();
    case kSaladSpmBos:
      return sp.bos_id();
    case kSaladSpmEos:
      return sp.eos_id();
    case kSaladSpmPad:
      return sp.pad_id();
    default:
      return -1;
  }
}

SALAD_SPM_EXPORT int salad_spm_train(const SaladSpmTrainArgs* args, SaladSpmBytesSink model_out,
                                     void* model_ctx, SaladSpmBytesSink vocab_out, void* vocab_ctx,
                                     SaladSpmBytesSink err, void* err_ctx) {
  return guarded(err, err_ctx, [&] {
    std::unordered_map<std::string, std::string> kwargs;
    for (size_t i = 0; i < args->count; ++i) kwargs[args->keys[i]] = args->values[i];
    kwargs["minloglevel"] = std::to_string(args->min_log_level);

    std::lock_guard<std::mutex> lock(g_train_mutex);
    spm::SetRandomGeneratorSeed(args->seed);
    // sentencepiece keeps one random generator per thread, seeded on its first use; a fresh
    // thread makes every training start from `seed`, however many ran before in this process.
    spm::util::Status status;
    std::string model;
    std::thread worker([&] {
      try {
        SourceIterator corpus(args->next_line, args->line_ctx);
        status = spm::SentencePieceTrainer::Train(kwargs, &corpus, &model);
      } catch (const std::exception& e) {
        status = spm::util::Status(spm::util::StatusCode::kInternal, e.what());
      } catch (...) {
        status = spm::util::Status(spm::util::StatusCode::kInternal, "unknown exception");
      }
    });
    worker.join();
    if (!status.ok()) {
      report(err, err_ctx, status);
      return -1;
    }

    spm::SentencePieceProcessor sp;
    status = sp.LoadFromSerializedProto(model);
    if (!status.ok()) {
      report(err, err_ctx, "the trained model does not load: " + status.ToString());
      return -1;
    }
    const std::string vocab = vocab_text(sp);
    model_out(model_ctx, model.data(), model.size());
    vocab_out(vocab_ctx, vocab.data(), vocab.size());
    return 0;
  });
}
