// flea chat driven through pipes on a tiny synthetic model with the real Llama 3 vocabulary:
// greedy replies equal `flea generate` on the same rendered prompt (turn 2 reusing the KV cache of
// turn 1, and after /reset), Ctrl-C stops a reply but not the program, bad flags are refused.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "gguf/gguf.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace flea {
namespace {

std::string flea_bin() { return test::bin_dir() + "/flea"; }
std::string vocab_path() { return test::reference_dir() + "/tokenizer/ggml-vocab-llama-bpe.gguf"; }

class ChatCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(flea_bin()) || !std::filesystem::exists(vocab_path())) return;
    dir_ = new test::TempDir();
    model_ = dir_->file("tiny.gguf");
    const std::string cmd = flea_bin() + " synth --shape tiny --type Q8_0 --out " + model_ + " --vocab " +
                            vocab_path() + " > /dev/null 2>&1";
    if (test::run_command(cmd) != 0) model_.clear();
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!std::filesystem::exists(flea_bin())) GTEST_SKIP() << "flea not built";
    if (!std::filesystem::exists(vocab_path())) GTEST_SKIP() << "no reference vocab at " << vocab_path();
    ASSERT_FALSE(model_.empty()) << "flea synth failed";
  }

  static test::TempDir* dir_;
  static std::string model_;
};
test::TempDir* ChatCli::dir_ = nullptr;
std::string ChatCli::model_;

constexpr int kMaxTokens = 12;

// What `flea generate` continues the rendered history with (greedy), cut where flea chat ends a
// reply: the first end-of-generation token or stop text.
std::string generate_reply(const std::string& model, const Tokenizer& tok, const chat::ChatTemplate& tmpl,
                           const std::vector<chat::Message>& history) {
  auto text = chat::render(tmpl, history, true);
  EXPECT_TRUE(text.ok());
  const std::vector<int32_t> prompt = tok.encode(*text, tok.add_bos_default(), true);
  std::string ids;
  for (int32_t t : prompt) ids += (ids.empty() ? "" : ",") + std::to_string(t);
  std::string out;
  const int rc = test::run_command(flea_bin() + " generate -m " + model + " -t 2 --temp 0 --json -n " +
                                   std::to_string(kMaxTokens) + " --tokens " + ids, &out);
  EXPECT_EQ(rc, 0) << out;
  std::vector<int32_t> gen = nlohmann::json::parse(out).at("tokens").get<std::vector<int32_t>>();
  EXPECT_EQ(gen.size(), static_cast<size_t>(kMaxTokens));
  const auto eog = std::find_if(gen.begin(), gen.end(), [&](int32_t t) { return tok.is_end_of_generation(t); });
  std::string reply = tok.decode(std::vector<int32_t>(gen.begin(), eog));
  for (const std::string& s : tmpl.stop_texts) reply = reply.substr(0, reply.find(s));
  return reply;
}

struct TurnStatus {
  int64_t generated = 0, prompt = 0, reused = 0, evaluated = 0;
};

// The status lines flea chat wrote to stderr, one per reply.
std::vector<TurnStatus> parse_status(const std::string& err) {
  std::vector<TurnStatus> out;
  size_t pos = 0;
  while ((pos = err.find("| prompt ", pos)) != std::string::npos) {
    const size_t line = err.rfind('\n', pos) + 1;  // npos + 1 = 0 on the first line
    long long g = 0, p = 0, r = 0, e = 0;
    if (std::sscanf(err.c_str() + line, "[%lld tokens", &g) == 1 &&
        std::sscanf(err.c_str() + pos, "| prompt %lld tokens: %lld reused from the KV cache, %lld evaluated", &p, &r,
                    &e) == 3) {
      out.push_back({g, p, r, e});
    }
    ++pos;
  }
  return out;
}

// Two turns, /reset, the first turn again: each greedy reply must be what flea generate continues
// the same rendered history with. Returns the status of the three replies.
std::vector<TurnStatus> chat_matches_generate(const std::string& model, const test::TempDir& dir,
                                              const std::string& template_name) {
  auto file = gguf::read_file(model);
  EXPECT_TRUE(file.ok());
  auto tok = Tokenizer::from_gguf(*file);
  EXPECT_TRUE(tok.ok());
  if (!tok.ok()) return {};
  const chat::ChatTemplate tmpl = *chat::template_by_name(template_name);

  std::vector<chat::Message> h = {{"user", "Hello"}};
  const std::string r1 = generate_reply(model, *tok, tmpl, h);
  h.push_back({"assistant", r1});
  h.push_back({"user", "How are you?"});
  const std::string r2 = generate_reply(model, *tok, tmpl, h);
  EXPECT_FALSE(r1.empty());
  EXPECT_FALSE(r2.empty());

  test::write_text(dir.file("in.txt"), "Hello\nHow are you?\n/reset\nHello\n/exit\nnever read\n");
  std::string out;
  const int rc = test::run_command(flea_bin() + " chat -m " + model + " -t 2 --temp 0 --chat-template " +
                                       template_name + " -n " + std::to_string(kMaxTokens) + " < " +
                                       dir.file("in.txt") + " 2> " + dir.file("err.txt"),
                                   &out);
  const std::string err = test::read_text(dir.file("err.txt"));
  EXPECT_EQ(rc, 0) << err;
  // Turn 3 follows /reset: the same prompt as turn 1, so the same reply.
  EXPECT_EQ(out, r1 + "\n" + r2 + "\n" + r1 + "\n") << template_name << "\n" << err;
  EXPECT_EQ(test::count_lines(err, "tok/s"), 3) << err;
  EXPECT_EQ(test::count_lines(err, "read/token"), 3) << err;
  EXPECT_EQ(test::count_lines(err, "cleared"), 1) << err;
  const std::vector<TurnStatus> st = parse_status(err);
  EXPECT_EQ(st.size(), 3u) << err;
  return st;
}

// Llama 3 on its own vocabulary: the rendered turn 2 starts with every cached token (turn 1's
// prompt and reply), so only the new suffix is evaluated.
TEST_F(ChatCli, GreedyRepliesEqualGenerateReusingTheCache) {
  const std::vector<TurnStatus> st = chat_matches_generate(model_, *dir_, "llama3");
  ASSERT_EQ(st.size(), 3u);
  EXPECT_EQ(st[0].reused, 0);
  // Cached after turn 1: its prompt and the replies' tokens but the last (sampled, not evaluated).
  EXPECT_EQ(st[1].reused, st[0].prompt + st[0].generated - 1);
  EXPECT_EQ(st[1].reused + st[1].evaluated, st[1].prompt);
  EXPECT_EQ(st[2].reused, 0);  // after /reset
  EXPECT_EQ(st[2].prompt, st[0].prompt);
}

// Llama 2 writes the reply back as " " + reply.strip() + " </s>", which re-tokenizes differently
// from the generated tokens: the cache is cut back to the common prefix, and the reply still
// matches generate on the whole prompt.
TEST_F(ChatCli, GreedyRepliesEqualGenerateAfterCuttingTheCacheBack) {
  const std::vector<TurnStatus> st = chat_matches_generate(model_, *dir_, "llama2");
  ASSERT_EQ(st.size(), 3u);
  EXPECT_LT(st[1].reused, st[0].prompt + st[0].generated - 1);
  EXPECT_GT(st[1].reused, 0);
  EXPECT_EQ(st[1].reused + st[1].evaluated, st[1].prompt);
}

TEST_F(ChatCli, ModelWithoutTemplateFallsBackToChatmlWithAWarning) {
  std::string out;
  const int rc = test::run_command("printf 'Hi\\n' | " + flea_bin() + " chat -m " + model_ +
                                       " -t 2 --temp 0 -n 3 2>&1 >/dev/null",
                                   &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(test::count_lines(out, "warning"), 1) << out;
  EXPECT_NE(out.find("chatml"), std::string::npos) << out;
  EXPECT_EQ(test::count_lines(out, "tok/s"), 1) << out;
}

TEST_F(ChatCli, BadFlagsAndLinesAreReported) {
  std::string out;
  EXPECT_EQ(test::run_command(flea_bin() + " chat -m " + model_ + " --chat-template chatm < /dev/null 2>&1", &out), 2);
  EXPECT_NE(out.find("unknown chat template 'chatm'"), std::string::npos) << out;
  EXPECT_NE(out.find("llama3"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(flea_bin() + " chat -m " + dir_->file("missing.gguf") + " < /dev/null 2>&1", &out), 2);
  EXPECT_NE(test::run_command(flea_bin() + " chat -m " + model_ + " --temp -1 < /dev/null 2>&1", &out), 0);
  // An unknown /command is reported and the chat goes on; EOF ends it.
  const int rc = test::run_command("printf '/nope\\n' | " + flea_bin() + " chat -m " + model_ + " -t 2 2>&1", &out);
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("unknown command '/nope'"), std::string::npos) << out;
  // A conversation longer than --ctx is refused for that turn, not fatal.
  const std::string long_line(400, 'x');
  const int rc2 = test::run_command("printf '" + long_line + "\\nHi\\n' | " + flea_bin() + " chat -m " + model_ +
                                        " -t 2 --temp 0 -n 2 --ctx 64 2>&1 >/dev/null",
                                    &out);
  EXPECT_EQ(rc2, 0);
  EXPECT_NE(out.find("--ctx is 64"), std::string::npos) << out;
  EXPECT_EQ(test::count_lines(out, "tok/s"), 1) << out;
}

// A child process with pipes on stdin, stdout and stderr.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int in[2], out[2], err[2];
    if (pipe(in) || pipe(out) || pipe(err)) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      dup2(err[1], 2);
      for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) close(fd);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    in_ = in[1];
    out_ = out[0];
    err_ = err[0];
  }
  ~Child() {
    for (int fd : {in_, out_, err_}) {
      if (fd >= 0) close(fd);
    }
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool started() const { return pid_ > 0; }
  void write_stdin(const std::string& s) { ASSERT_EQ(write(in_, s.data(), s.size()), static_cast<ssize_t>(s.size())); }
  void signal(int sig) { kill(pid_, sig); }
  // Reads stdout and stderr until `done` holds or the timeout passes; returns done().
  bool pump_until(const std::function<bool()>& done, int timeout_ms = 60000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!done()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
      if (poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 1000))) < 0) return false;
      bool eof = true;
      for (int i = 0; i < 2; ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP))) {
          eof = false;
          continue;
        }
        char buf[4096];
        const ssize_t n = read(fds[i].fd, buf, sizeof buf);
        if (n > 0) {
          (i == 0 ? out : err).append(buf, static_cast<size_t>(n));
          eof = false;
        }
      }
      if (eof && fds[0].revents && fds[1].revents) return done();  // both pipes closed
    }
    return true;
  }
  // Reads until the child closes stdout and stderr (or 20 s pass).
  void drain() { (void)pump_until([] { return false; }, 20000); }
  int wait_exit() {
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void close_stdin() {
    close(in_);
    in_ = -1;
  }

  std::string out, err;

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  bool reaped_ = false;
};

TEST_F(ChatCli, CtrlCStopsTheReplyNotTheProgram) {
  // --ignore-eos and a reply limit far beyond what the test waits for: the reply is still being
  // generated when SIGINT arrives.
  Child c({flea_bin(), "chat", "-m", model_, "-t", "2", "--temp", "0", "--ignore-eos", "-n", "20000", "--ctx",
           "20100"});
  ASSERT_TRUE(c.started());
  auto count = [](const std::string& s, const char* needle) { return test::count_lines(s, needle); };

  c.write_stdin("Hello\n");
  ASSERT_TRUE(c.pump_until([&] { return c.out.size() >= 40; })) << c.err;
  c.signal(SIGINT);
  ASSERT_TRUE(c.pump_until([&] { return count(c.err, "interrupted") == 1; })) << c.err;
  const size_t first_reply = c.out.size();
  EXPECT_EQ(c.out.back(), '\n');

  // Still chatting: the next line gets a reply, which a second Ctrl-C stops too.
  c.write_stdin("Again\n");
  ASSERT_TRUE(c.pump_until([&] { return c.out.size() >= first_reply + 40; })) << c.err;
  c.signal(SIGINT);
  ASSERT_TRUE(c.pump_until([&] { return count(c.err, "interrupted") == 2; })) << c.err;
  EXPECT_EQ(count(c.err, "tok/s"), 2) << c.err;
  // The second turn reused the first turn's cache (its interrupted reply is in the history).
  EXPECT_EQ(count(c.err, ": 0 reused"), 1) << c.err;

  c.write_stdin("/exit\n");
  c.drain();
  EXPECT_EQ(c.wait_exit(), 0) << c.err;
}

TEST_F(ChatCli, CtrlCAtThePromptExits) {
  Child c({flea_bin(), "chat", "-m", model_, "-t", "2"});
  ASSERT_TRUE(c.started());
  ASSERT_TRUE(c.pump_until([&] { return c.err.find("/reset") != std::string::npos; })) << c.err;  // ready
  c.signal(SIGINT);
  EXPECT_EQ(c.wait_exit(), 0) << c.err;
}

}  // namespace
}  // namespace flea
