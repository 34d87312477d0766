// ReplyStream: what flea chat shows while a reply streams: whole UTF-8 characters only, stop
// texts recognised across token boundaries and never shown, nothing lost at the end.
#include "chat/reply_stream.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flea::chat {
namespace {

std::string push_all(ReplyStream* s, const std::vector<std::string>& pieces, std::vector<std::string>* shown) {
  std::string all;
  for (const std::string& p : pieces) {
    std::string out = s->push(p);
    if (shown) shown->push_back(out);
    all += out;
  }
  return all;
}

TEST(ReplyStream, PassesPlainTextThrough) {
  ReplyStream s({"<|im_end|>"});
  std::vector<std::string> shown;
  EXPECT_EQ(push_all(&s, {"Hello", " world"}, &shown), "Hello world");
  EXPECT_EQ(shown, (std::vector<std::string>{"Hello", " world"}));
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.finish(), "");
  EXPECT_EQ(s.text(), "Hello world");
}

TEST(ReplyStream, HoldsASplitUtf8CharacterUntilItIsWhole) {
  ReplyStream s({});
  const std::string euro = "\xE2\x82\xAC";  // U+20AC, three bytes
  EXPECT_EQ(s.push("a" + euro.substr(0, 1)), "a");
  EXPECT_EQ(s.push(euro.substr(1, 1)), "");
  EXPECT_EQ(s.push(euro.substr(2, 1) + "b"), euro + "b");
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, four bytes
  EXPECT_EQ(s.push(emoji.substr(0, 3)), "");
  EXPECT_EQ(s.push(emoji.substr(3)), emoji);
}

TEST(ReplyStream, StopTextAcrossTokensEndsTheReplyAndIsNotShown) {
  ReplyStream s({"<|im_end|>", "</s>"});
  std::vector<std::string> shown;
  const std::string all = push_all(&s, {"Hi", " there", "<|", "im", "_end", "|>", "more"}, &shown);
  EXPECT_EQ(all, "Hi there");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.text(), "Hi there");
  EXPECT_EQ(s.finish(), "");
  EXPECT_EQ(shown[2], "");  // "<|" might begin the stop text: held
}

TEST(ReplyStream, ReleasesAHeldPrefixThatTurnsOutNotToBeAStopText) {
  ReplyStream s({"</s>"});
  EXPECT_EQ(s.push("a </"), "a ");
  EXPECT_EQ(s.push("b>"), "</b>");
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.push("x<"), "x");
  EXPECT_EQ(s.finish(), "<");  // generation ended: what was held is still the reply
  EXPECT_EQ(s.text(), "a </b>x<");
}

TEST(ReplyStream, StopTextInsideOnePiece) {
  ReplyStream s({"<end_of_turn>"});
  EXPECT_EQ(s.push("ok.<end_of_turn>\n<start"), "ok.");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("more"), "");
  EXPECT_EQ(s.text(), "ok.");
}

TEST(ReplyStream, IncompleteUtf8Tail) {
  EXPECT_EQ(incomplete_utf8_tail(""), 0u);
  EXPECT_EQ(incomplete_utf8_tail("abc"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("a\xC3"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("a\xC3\xA9"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\xE2\x82"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(incomplete_utf8_tail("\x80\x80"), 0u);  // stray continuation bytes: nothing to wait for
}

}  // namespace
}  // namespace flea::chat
