#include "chat/reply_stream.h"

#include <algorithm>

namespace flea::chat {

size_t incomplete_utf8_tail(const std::string& s) {
  // Walk back over at most 3 continuation bytes to the lead byte and compare its length.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return len > back ? back : 0;
  }
  return 0;  // only continuation bytes (invalid UTF-8): nothing to wait for
}

ReplyStream::ReplyStream(std::vector<std::string> stop_texts) {
  for (auto& s : stop_texts) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string ReplyStream::push(const std::string& piece) {
  if (stopped_) return "";
  buffer_ += piece;
  // A stop text cannot begin before shown_: anything that could have begun one was held back.
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, buffer_.find(s, shown_));
  if (first != std::string::npos) {
    stopped_ = true;
    stop_at_ = first;
    std::string out = buffer_.substr(shown_, first - shown_);
    shown_ = first;
    return out;
  }
  // Hold back the longest tail that is a proper prefix of a stop text, and an unfinished character.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    for (size_t k = std::min(s.size() - 1, buffer_.size() - shown_); k > hold; --k) {
      if (buffer_.compare(buffer_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  const size_t end = buffer_.size() - std::max(hold, incomplete_utf8_tail(buffer_));
  if (end <= shown_) return "";
  std::string out = buffer_.substr(shown_, end - shown_);
  shown_ = end;
  return out;
}

std::string ReplyStream::finish() {
  if (stopped_) return "";
  std::string out = buffer_.substr(shown_);
  shown_ = buffer_.size();
  return out;
}

}  // namespace flea::chat
