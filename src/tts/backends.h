// The TTS backends behind make_tts() and what they share. Private to src/tts.
#pragma once

#include <memory>
#include <string>

#include "salad/tts/tts.h"

namespace salad::tts::detail {

std::unique_ptr<TtsBackend> make_flite(const TtsOptions& o);
std::unique_ptr<TtsBackend> make_espeak(const TtsOptions& o);
std::unique_ptr<TtsBackend> make_command(const TtsOptions& o);

/// Throws TtsError "empty text" (nothing but whitespace) or "text too long" (more than
/// `max_chars` UTF-8 characters).
void check_text(const std::string& text, int64_t max_chars);

/// Makes `samples` ([L] float, any rate) a Speech: float32 at kSampleRate, scaled so that the
/// peak is 0.95 (silence stays silence). Throws TtsError("empty audio") for zero samples or
/// non-finite values. `what` names the item in messages.
Speech finish_speech(at::Tensor samples, int64_t rate, const std::string& what);

/// "backend 'x' (voice 'v')" and the start of the text, for messages.
std::string describe_item(const std::string& backend, const std::string& voice,
                          const std::string& text);

}  // namespace salad::tts::detail
