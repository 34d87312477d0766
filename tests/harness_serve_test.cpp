// Serving points: SSE parsing across read boundaries, the load client's statistics against a fake
// server with known delays (tests/fixtures/harness/fake_serve.py via fake_flea.py serve), error
// counting, a server that never gets healthy or exits at once, SIGTERM then SIGKILL, the server
// reused across concurrency points, and run_lab_harness end to end on a serving scenario.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>

#include "flea/clock.h"
#include "scenario.h"
#include "serve_client.h"
#include "serve_point.h"
#include "sweep.h"
#include "test_util.h"

namespace fh = flea::harness;
using fh::Json;

namespace {

std::vector<std::string> all_events(const std::string& stream, const std::vector<size_t>& cuts) {
  fh::SseParser p;
  std::vector<std::string> ev;
  size_t at = 0;
  for (size_t c : cuts) {
    p.feed(stream.data() + at, c - at, &ev);
    at = c;
  }
  p.feed(stream.data() + at, stream.size() - at, &ev);
  return ev;
}

TEST(SseParser, SameEventsWhereverTheReadsSplit) {
  const std::string stream =
      ": comment\n"
      "data: {\"a\":1}\n\n"
      "event: x\r\ndata: {\"b\":2}\r\n\r\n"
      "data: line1\ndata: line2\n\n"
      "data:[DONE]\n\n";
  const std::vector<std::string> want = {"{\"a\":1}", "{\"b\":2}", "line1\nline2", "[DONE]"};
  EXPECT_EQ(all_events(stream, {}), want);
  for (size_t cut = 1; cut < stream.size(); ++cut) EXPECT_EQ(all_events(stream, {cut}), want) << "cut at " << cut;
  std::vector<size_t> every;
  for (size_t i = 1; i < stream.size(); ++i) every.push_back(i);
  EXPECT_EQ(all_events(stream, every), want);
}

TEST(SseParser, UnfinishedEventIsNotEmitted) {
  fh::SseParser p;
  std::vector<std::string> ev;
  const std::string s = "data: {\"a\":1}\n";  // no blank line yet
  p.feed(s.data(), s.size(), &ev);
  EXPECT_TRUE(ev.empty());
  p.feed("\n", 1, &ev);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0], "{\"a\":1}");
}

TEST(Prometheus, SumsLabelSetsAndIgnoresPrefixedNames) {
  const std::string text =
      "# TYPE flea_weight_bytes_read_total counter\n"
      "flea_weight_bytes_read_total_extra 5\n"
      "flea_weight_bytes_read_total{dev=\"a\"} 100\n"
      "flea_weight_bytes_read_total{dev=\"b\"} 2.5e2\n";
  EXPECT_DOUBLE_EQ(fh::prometheus_value(text, fh::kServeBytesReadMetric), 350);
  EXPECT_DOUBLE_EQ(fh::prometheus_value("flea_weight_bytes_read_total 7\n", fh::kServeBytesReadMetric), 7);
  EXPECT_EQ(fh::prometheus_value("other 1\n", fh::kServeBytesReadMetric), -1);
}

TEST(PromptText, HasTheRequestedWordCount) {
  const std::string t = fh::make_prompt_text(100);
  EXPECT_EQ(std::count(t.begin(), t.end(), ' '), 99);
  EXPECT_EQ(fh::make_prompt_text(100), t);
}

// The fake server as `flea serve` would be started, with knobs in the environment.
class FakeServe : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const char* k : {"FAKE_SERVE_LOAD_S", "FAKE_SERVE_NEVER_HEALTHY", "FAKE_SERVE_FIRST_MS", "FAKE_SERVE_GAP_MS",
                          "FAKE_SERVE_FAIL_EVERY", "FAKE_FLEA_LOG"}) {
      unsetenv(k);
    }
  }
  std::vector<std::string> argv(int port) {
    return {flea::test::fake_flea(), "serve", "--model", "m.gguf", "--host", "127.0.0.1", "--port", std::to_string(port)};
  }
  std::unique_ptr<fh::ServerProcess> start_healthy() {
    auto port = fh::pick_free_port();
    EXPECT_TRUE(port.ok());
    auto s = fh::ServerProcess::start(argv(*port), "127.0.0.1", *port);
    EXPECT_TRUE(s.ok());
    const flea::Status h = (*s)->wait_healthy(30, nullptr);
    EXPECT_TRUE(h.ok()) << h.message();
    return std::move(*s);
  }
};

TEST_F(FakeServe, StatisticsMatchTheServersDelays) {
  setenv("FAKE_SERVE_FIRST_MS", "60", 1);
  setenv("FAKE_SERVE_GAP_MS", "15", 1);
  auto srv = start_healthy();
  fh::LoadOptions o;
  o.port = srv->port();
  o.concurrency = 2;
  o.requests = 6;
  o.prompt = fh::make_prompt_text(10);
  o.max_tokens = 5;
  o.timeout_s = 30;
  const fh::LoadResult load = fh::run_load(o);
  const Json s = fh::serving_summary(load, 2);
  ASSERT_EQ(s["requests"], 6);
  EXPECT_EQ(s["errors"], 0) << s["first_errors"].dump();
  EXPECT_EQ(s["output_tokens"], 30);  // usage.completion_tokens
  for (const auto& r : load.samples) {
    EXPECT_EQ(r.token_ns.size(), 5u);
    EXPECT_EQ(r.usage_prompt_tokens, 10);
  }
  // TTFT: the 60 ms the server waits, plus local overhead.
  EXPECT_GE(s["ttft_ms"]["p50"].get<double>(), 59.0);
  EXPECT_LT(s["ttft_ms"]["p50"].get<double>(), 90.0);  // no Nagle / delayed-ACK stall (~40 ms)
  // ITL and TPOT: the 15 ms gap (each event is two chunks 1 ms apart; the gap is what separates tokens).
  EXPECT_GE(s["itl_ms"]["p50"].get<double>(), 14.0);
  EXPECT_LT(s["itl_ms"]["p50"].get<double>(), 40.0);
  EXPECT_EQ(s["itl_ms"]["n"], 6 * 4);
  EXPECT_GE(s["tpot_ms"]["p50"].get<double>(), 14.0);
  EXPECT_LT(s["tpot_ms"]["p50"].get<double>(), 40.0);
  EXPECT_LE(s["itl_ms"]["p50"].get<double>(), s["itl_ms"]["p90"].get<double>());
  EXPECT_LE(s["itl_ms"]["p90"].get<double>(), s["itl_ms"]["p99"].get<double>());
  // Two clients, three requests each back to back: about 3 * (60 + 4 * 15) ms of wall time.
  const double wall = s["wall_s"].get<double>();
  EXPECT_GE(wall, 0.36);
  EXPECT_LT(wall, 1.5);
  EXPECT_NEAR(s["output_tok_s"].get<double>(), 30 / wall, 1e-9);
  EXPECT_NEAR(s["request_throughput_rps"].get<double>(), 6 / wall, 1e-9);
  // Both clients were in flight at once.
  std::string metrics;
  ASSERT_EQ(fh::http_get("127.0.0.1", srv->port(), "/metrics", 5, &metrics), 200);
  EXPECT_EQ(fh::prometheus_value(metrics, "flea_max_in_flight"), 2);
  EXPECT_EQ(fh::prometheus_value(metrics, fh::kServeBytesReadMetric), 30 * 1000);
}

TEST_F(FakeServe, FailedRequestsAreCountedNotTimed) {
  setenv("FAKE_SERVE_FIRST_MS", "1", 1);
  setenv("FAKE_SERVE_GAP_MS", "1", 1);
  setenv("FAKE_SERVE_FAIL_EVERY", "3", 1);
  auto srv = start_healthy();
  fh::LoadOptions o;
  o.port = srv->port();
  o.concurrency = 3;
  o.requests = 9;
  o.prompt = "a b c";
  o.max_tokens = 3;
  const Json s = fh::serving_summary(fh::run_load(o), 3);
  EXPECT_EQ(s["requests"], 9);
  EXPECT_EQ(s["errors"], 3);
  EXPECT_EQ(s["ok"], 6);
  EXPECT_EQ(s["output_tokens"], 18);
  EXPECT_EQ(s["ttft_ms"]["n"], 6);
  ASSERT_FALSE(s["first_errors"].empty());
  EXPECT_NE(s["first_errors"][0].get<std::string>().find("HTTP 503"), std::string::npos);
  EXPECT_NE(s["first_errors"][0].get<std::string>().find("queue full"), std::string::npos);
}

TEST_F(FakeServe, NoServerIsATransportErrorPerRequest) {
  auto port = fh::pick_free_port();
  ASSERT_TRUE(port.ok());
  fh::LoadOptions o;
  o.port = *port;  // nothing listens
  o.concurrency = 2;
  o.requests = 4;
  o.timeout_s = 2;
  const Json s = fh::serving_summary(fh::run_load(o), 2);
  EXPECT_EQ(s["errors"], 4);
  EXPECT_EQ(s["ok"], 0);
  EXPECT_TRUE(s["ttft_ms"].is_null());
  EXPECT_NE(s["first_errors"][0].get<std::string>().find("transport"), std::string::npos);
}

TEST_F(FakeServe, NeverHealthyFailsWithinTheTimeoutAndIsStopped) {
  setenv("FAKE_SERVE_NEVER_HEALTHY", "1", 1);
  auto port = fh::pick_free_port();
  ASSERT_TRUE(port.ok());
  auto s = fh::ServerProcess::start(argv(*port), "127.0.0.1", *port);
  ASSERT_TRUE(s.ok());
  const int64_t t0 = flea::steady_now_ns();
  const flea::Status h = (*s)->wait_healthy(1.5, nullptr);
  const double took_s = static_cast<double>(flea::steady_now_ns() - t0) / 1e9;
  ASSERT_FALSE(h.ok());
  EXPECT_GE(took_s, 1.4);
  EXPECT_LT(took_s, 6);
  EXPECT_NE(h.message().find("not healthy within health_timeout_s 1.5"), std::string::npos) << h.message();
  EXPECT_NE(h.message().find("HTTP 503"), std::string::npos) << h.message();
  EXPECT_NE(h.message().find("fake flea serve: listening"), std::string::npos) << h.message();  // its log tail
  const pid_t pid = (*s)->pid();
  (*s)->stop();
  EXPECT_FALSE((*s)->running());
  EXPECT_EQ(kill(pid, 0), -1);  // reaped: the pid is gone
}

TEST(ServerProcess, ExitAtOnceFailsFastWithItsStderr) {
  auto s = fh::ServerProcess::start({"/bin/sh", "-c", "echo 'flea serve: unknown flag --bogus' >&2; exit 2"},
                                    "127.0.0.1", 1);
  ASSERT_TRUE(s.ok());
  const int64_t t0 = flea::steady_now_ns();
  const flea::Status h = (*s)->wait_healthy(30, nullptr);
  EXPECT_LT(static_cast<double>(flea::steady_now_ns() - t0) / 1e9, 5.0);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.message().find("exited 2"), std::string::npos) << h.message();
  EXPECT_NE(h.message().find("unknown flag --bogus"), std::string::npos) << h.message();
}

TEST(ServerProcess, IgnoredSigtermEndsInSigkill) {
  auto s = fh::ServerProcess::start({"/bin/sh", "-c", "trap '' TERM; echo ready >&2; while :; do sleep 1; done"},
                                    "127.0.0.1", 1);
  ASSERT_TRUE(s.ok());
  for (int i = 0; i < 100 && (*s)->log_tail(100).find("ready") == std::string::npos; ++i) usleep(20000);
  const int64_t t0 = flea::steady_now_ns();
  (*s)->stop(0.3);
  const double took_s = static_cast<double>(flea::steady_now_ns() - t0) / 1e9;
  EXPECT_GE(took_s, 0.29);
  EXPECT_LT(took_s, 5);
  EXPECT_NE((*s)->exit_text().find("signal 9"), std::string::npos) << (*s)->exit_text();
}

// A serving point's settings as expand_sweep makes them.
Json serve_point(int64_t concurrency) {
  return Json{{"model", "m.gguf"}, {"backend", "cpu"}, {"threads", 1}, {"residency", "full"}, {"io", "pread"},
              {"prefetch", 1}, {"vram_budget_mb", 0}, {"ram_budget_mb", 0}, {"throttle_gb_s", 0.0},
              {"memory_limit_mb", 0}, {"concurrency", concurrency},
              {"serve", {{"requests", 4}, {"warmup_requests", 1}, {"prompt_tokens", 8}, {"output_tokens", 4},
                         {"parallel", 2}, {"ctx", 64}, {"port", 0}, {"health_timeout_s", 30.0}}}};
}

TEST_F(FakeServe, ServerIsReusedAcrossConcurrencyAndBytesPerTokenIsTheCounterDelta) {
  setenv("FAKE_SERVE_FIRST_MS", "2", 1);
  setenv("FAKE_SERVE_GAP_MS", "2", 1);
  flea::test::TempDir dir;
  setenv("FAKE_FLEA_LOG", dir.file("log").c_str(), 1);
  fh::ServeSession session;
  fh::RunEnv env;
  env.flea = flea::test::fake_flea();
  env.settings = {{"timeout_s", 30}};
  env.serve = &session;
  Json recs[2];
  for (int i = 0; i < 2; ++i) {
    fh::RunSpec r;
    r.id = "r000" + std::to_string(i + 1);
    r.engine = "flea-serve";
    r.point = serve_point(i + 1);
    r.model.path = "m.gguf";
    recs[i] = fh::run_serve_point(r, env, &session);
    ASSERT_EQ(recs[i]["status"], "ok") << recs[i].dump();
  }
  EXPECT_FALSE(recs[0]["server"]["reused"].get<bool>());
  EXPECT_TRUE(recs[1]["server"]["reused"].get<bool>());
  EXPECT_EQ(recs[0]["server"]["pid"], recs[1]["server"]["pid"]);
  for (const auto& rec : recs) {
    const Json& sv = rec["serving"];
    EXPECT_EQ(sv["requests"], 4);
    EXPECT_EQ(sv["output_tokens"], 16);
    // The warmup request's tokens are read before the first scrape: exactly 1000 per timed token.
    EXPECT_DOUBLE_EQ(sv["bytes_read_per_token"].get<double>(), 1000.0);
    EXPECT_EQ(sv["prompt_tokens_effective"], 8);
    EXPECT_EQ(rec["samples"]["requests"].size(), 4u);
    EXPECT_NE(rec["command"].get<std::string>().find("serve --model m.gguf"), std::string::npos);
  }
  EXPECT_EQ(recs[1]["serving"]["concurrency"], 2);
  // One server start for both points.
  std::string log = flea::test::read_text(dir.file("log"));
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  const pid_t pid = recs[0]["server"]["pid"].get<pid_t>();
  session.stop();
  EXPECT_EQ(kill(pid, 0), -1);
}

TEST_F(FakeServe, NeverHealthyServerIsAFailedPointWithItsLog) {
  setenv("FAKE_SERVE_NEVER_HEALTHY", "1", 1);
  fh::ServeSession session;
  fh::RunEnv env;
  env.flea = flea::test::fake_flea();
  env.settings = {{"timeout_s", 30}};
  fh::RunSpec r;
  r.id = "r0001";
  r.engine = "flea-serve";
  r.point = serve_point(1);
  r.point["serve"]["health_timeout_s"] = 1.0;
  r.model.path = "m.gguf";
  const Json rec = fh::run_serve_point(r, env, &session);
  EXPECT_EQ(rec["status"], "failed");
  const std::string e = rec["error"];
  EXPECT_NE(e.find("not healthy within health_timeout_s 1.0"), std::string::npos) << e;
  EXPECT_NE(e.find("fake flea serve: listening"), std::string::npos) << e;
  // The next concurrency value on the same configuration fails at once instead of waiting again.
  r.id = "r0002";
  r.point["concurrency"] = 2;
  const int64_t t0 = flea::steady_now_ns();
  const Json again = fh::run_serve_point(r, env, &session);
  EXPECT_LT(static_cast<double>(flea::steady_now_ns() - t0) / 1e9, 0.5);
  EXPECT_EQ(again["status"], "failed");
  EXPECT_NE(again["error"].get<std::string>().find("not retried"), std::string::npos) << again.dump();
}

TEST(ServeScenario, ConcurrencySweepsOneServerConfiguration) {
  const std::string path = std::string(FLEA_SOURCE_DIR) + "/scenarios/serving_tiny.yaml";
  auto sc = fh::load_scenario(path);
  ASSERT_TRUE(sc.ok()) << sc.status().message();
  fh::SweepOptions o;
  o.cache_dir = "/tmp/unused";
  auto runs = fh::expand_sweep(*sc, o);
  ASSERT_TRUE(runs.ok()) << runs.status().message();
  ASSERT_EQ(runs->size(), 2u);
  std::string argv0;
  for (size_t i = 0; i < runs->size(); ++i) {
    const auto& r = (*runs)[i];
    EXPECT_EQ(r.engine, "flea-serve");
    EXPECT_EQ(r.point["concurrency"], static_cast<int64_t>(i + 1));
    EXPECT_EQ(r.point["serve"]["parallel"], 2);  // the largest concurrency
    EXPECT_FALSE(r.point.contains("reps"));
    const std::string a = fh::shell_quote(fh::serve_argv("flea", r.point, r.model.path));
    if (i == 0) argv0 = a;
    EXPECT_EQ(a, argv0);  // the same server for both
  }
}

TEST(ServeScenario, UnknownServeKeyIsAnErrorWithItsPosition) {
  auto doc = fh::parse_yaml_doc("s.yaml", "model: m.gguf\nserve:\n  requets: 3\n", fh::scenario_keys());
  ASSERT_FALSE(doc.ok());
  EXPECT_NE(doc.status().message().find("s.yaml:3:3: unknown key 'serve.requets' (did you mean 'requests'?)"),
            std::string::npos)
      << doc.status().message();
}

TEST(ServeScenario, HarnessRunsTheTinyScenarioEndToEnd) {
  flea::test::TempDir dir;
  const std::string results = dir.file("out.json");
  std::string out;
  const int rc = flea::test::run_command("FLEA_CACHE_DIR=" + dir.file("cache") + " FAKE_SERVE_FIRST_MS=2 FAKE_SERVE_GAP_MS=2 " + flea::test::harness_bin() +
                                             " --config " + FLEA_SOURCE_DIR + "/scenarios/serving_tiny.yaml --flea " +
                                             flea::test::fake_flea() + " --no-ceilings -q --results " + results + " 2>&1",
                                         &out);
  ASSERT_EQ(rc, 0) << out;
  const Json doc = Json::parse(flea::test::read_text(results));
  ASSERT_EQ(doc["runs"].size(), 2u);
  for (const auto& run : doc["runs"]) {
    EXPECT_EQ(run["status"], "ok") << run.dump();
    EXPECT_EQ(run["engine"], "flea-serve");
    EXPECT_GT(run["serving"]["output_tok_s"].get<double>(), 0);
    EXPECT_EQ(run["serving"]["errors"], 0);
  }
  EXPECT_TRUE(doc["runs"][1]["server"]["reused"].get<bool>());
  EXPECT_NE(out.find("out tok/s"), std::string::npos) << out;
  EXPECT_EQ(flea::test::schema_errors(results), "") << out;
}

}  // namespace
