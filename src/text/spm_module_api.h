// The C interface of libsalad_spm.so, the module that wraps libsentencepiece. libsalad never links
// libsentencepiece (its bundled protobuf-lite would interpose on LibTorch's libprotobuf and crash
// the process at load time); it dlopen()s this module with RTLD_LOCAL | RTLD_DEEPBIND and reaches
// it only through these functions (see sentencepiece_tokenizer.cpp).
//
// Conventions: no C++ exception crosses this boundary. Results and error messages are handed to
// caller-supplied sinks (called zero or more times per call; the data is valid only during the
// call), so no memory is allocated on one side and freed on the other. Functions that can fail
// return 0 on success and -1 on failure, after passing the message to `err`.
#pragma once

#include <cstddef>
#include <cstdint>

/// Bumped on every incompatible change; libsalad refuses a module with another version.
#define SALAD_SPM_ABI_VERSION 1

extern "C" {

/// A loaded SentencePiece model (a sentencepiece::SentencePieceProcessor). Immutable after load:
/// every function taking a `const SaladSpmModel*` may be called from several threads at once.
typedef struct SaladSpmModel SaladSpmModel;

/// Receives bytes (text, a serialized model or an error message).
typedef void (*SaladSpmBytesSink)(void* ctx, const char* data, size_t size);
/// Receives token ids.
typedef void (*SaladSpmIdsSink)(void* ctx, const int32_t* ids, size_t count);
/// Yields the next training sentence: returns 1 with (*data, *size) valid until the next call,
/// 0 at the end, -1 on a read error (training then fails; the source keeps its own account of
/// the error for its caller).
typedef int (*SaladSpmLineSource)(void* ctx, const char** data, size_t* size);

/// Training request. `keys`/`values` are sentencepiece TrainerSpec/NormalizerSpec fields in
/// their flag spelling ("vocab_size" -> "8000"); repeated fields are comma-separated. The model
/// is returned in memory: the module sets neither `input` nor `model_prefix`.
typedef struct SaladSpmTrainArgs {
  const char* const* keys;
  const char* const* values;
  size_t count;
  uint32_t seed;      ///< sentencepiece::SetRandomGeneratorSeed (0xFFFFFFFF is reserved)
  int min_log_level;  ///< sentencepiece's stderr log: 0 info, 1 warning, 2 error, 3 silent
  SaladSpmLineSource next_line;
  void* line_ctx;
} SaladSpmTrainArgs;

enum SaladSpmSpecial { kSaladSpmUnk = 0, kSaladSpmBos = 1, kSaladSpmEos = 2, kSaladSpmPad = 3 };

int salad_spm_abi_version(void);

/// Parses a serialized ModelProto. Returns nullptr (message to `err`) if it is not a valid model.
SaladSpmModel* salad_spm_load(const char* data, size_t size, SaladSpmBytesSink err, void* err_ctx);
void salad_spm_free(SaladSpmModel* model);

/// Ids of `text` (no BOS/EOS). The caller passes valid UTF-8.
int salad_spm_encode(const SaladSpmModel* model, const char* text, size_t size, SaladSpmIdsSink out,
                     void* out_ctx, SaladSpmBytesSink err, void* err_ctx);
/// Text of `ids`; the caller checks that every id is in [0, vocab size).
int salad_spm_decode(const SaladSpmModel* model, const int32_t* ids, size_t count,
                     SaladSpmBytesSink out, void* out_ctx, SaladSpmBytesSink err, void* err_ctx);

int salad_spm_vocab_size(const SaladSpmModel* model);
/// The piece of `id` (pointer into the model, valid while it lives); -1 if out of range.
int salad_spm_id_to_piece(const SaladSpmModel* model, int id, const char** data, size_t* size);
/// The id of an exact piece, -1 if the vocabulary has no such piece.
int salad_spm_piece_to_id(const SaladSpmModel* model, const char* piece, size_t size);
/// unk/bos/eos/pad id (SaladSpmSpecial), -1 when the model has none.
int salad_spm_special_id(const SaladSpmModel* model, int which);

/// Trains a model. On success `model_out` receives the serialized ModelProto and `vocab_out` the
/// `.vocab` text ("piece\tscore" lines, as spm_train writes it). Calls are serialised inside the
/// module (the seed and log level are process-wide in sentencepiece).
int salad_spm_train(const SaladSpmTrainArgs* args, SaladSpmBytesSink model_out, void* model_ctx,
                    SaladSpmBytesSink vocab_out, void* vocab_ctx, SaladSpmBytesSink err,
                    void* err_ctx);

}  // extern "C"
