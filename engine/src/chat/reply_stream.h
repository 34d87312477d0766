// The text of a reply as tokens arrive: which bytes are safe to show now, and whether a stop text
// has ended the reply. Token pieces may split a UTF-8 character, and a stop text ("<|im_end|>",
// "</s>") may arrive over several tokens, so both are held back until they are decided.
#pragma once

#include <string>
#include <vector>

namespace flea::chat {

class ReplyStream {
 public:
  explicit ReplyStream(std::vector<std::string> stop_texts);

  // Appends one token's bytes; returns the bytes that may be shown now (possibly empty). After a
  // stop text appeared, stopped() is true and later pushes return nothing.
  std::string push(const std::string& piece);
  // Generation ended (EOS, max tokens, interrupt): the bytes still held back (a partial stop text or
  // character included: they are what was generated).
  std::string finish();

  bool stopped() const { return stopped_; }
  // The reply so far, without the stop text and what follows it.
  std::string text() const { return stopped_ ? buffer_.substr(0, stop_at_) : buffer_; }

 private:
  std::vector<std::string> stops_;
  std::string buffer_;  // every byte pushed
  size_t shown_ = 0;    // bytes of buffer_ returned so far
  size_t stop_at_ = 0;
  bool stopped_ = false;
};

// Bytes at the end of `s` that begin a UTF-8 sequence not yet complete (0..3).
size_t incomplete_utf8_tail(const std::string& s);

}  // namespace flea::chat
