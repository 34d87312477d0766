"""End-to-end tests of `flea serve`: the real binary on a tiny synthetic model with a real (Llama 3
BPE) vocabulary, driven by curl, a standard-library Python client (http.client + SSE parsing) and
the official `openai` npm package; then load (1000 requests at concurrency 8, flat RSS) and hostile
clients (malformed JSON, wrong types, huge bodies, 1000 idle connections, clients vanishing
mid-stream), after each of which the server must still answer /health."""
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("FLEA_BUILD_DIR", "build"))
FLEA = os.path.join(BUILD, "bin", "flea")
REFERENCE = os.environ.get("FLEA_REFERENCE_DIR", os.path.join(ROOT, "..", "shared", "reference"))
VOCAB = os.path.join(REFERENCE, "tokenizer", "ggml-vocab-llama-bpe.gguf")
CLIENT_DIR = os.path.join(ROOT, "tests", "serve", "client")

pytestmark = [
    pytest.mark.skipif(not os.path.exists(FLEA), reason=f"{FLEA} not built"),
    pytest.mark.skipif(not os.path.exists(VOCAB), reason=f"{VOCAB} not found (reference data)"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("serve") / "tiny.gguf")
    subprocess.run([FLEA, "synth", "--shape", "tiny", "--type", "Q8_0", "--vocab", VOCAB, "--out", out],
                   check=True, capture_output=True)
    return out


class Server:
    """A `flea serve` process on a free port; stderr is kept for failure messages."""

    def __init__(self, model_path, *args, wait_ready=True):
        self.proc = subprocess.Popen([FLEA, "serve", "-m", model_path, "--port", "0", "--threads", "2", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        line = self.proc.stderr.readline()
        self.log.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert m, f"no listening line: {line!r}"
        self.port = int(m.group(1))
        threading.Thread(target=self._drain, daemon=True).start()
        if wait_ready:
            deadline = time.time() + 60
            while request(self.port, "GET", "/health")[0] != 200:
                assert time.time() < deadline, "".join(self.log)
                assert self.proc.poll() is None, "".join(self.log)
                time.sleep(0.05)

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))

    def stop(self):
        """SIGTERM; the server must exit 0 within 20 s."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=20)
        assert rc == 0, "".join(self.log)


def request(port, method, path, body=None, headers=None, timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    except (ConnectionError, socket.timeout) as e:
        return 0, {}, str(e).encode()
    finally:
        conn.close()


def sse_events(resp):
    """Yields the data of each server-sent event of an http.client response, until [DONE]."""
    data = []
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.decode().rstrip("\r\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            payload = "\n".join(data)
            data = []
            yield payload
            if payload == "[DONE]":
                return


def metric(port, name):
    status, _, body = request(port, "GET", "/metrics")
    assert status == 200
    m = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else None


@pytest.fixture(scope="module")
def server(model):
    s = Server(model, "--parallel", "8", "--ctx", "256", "--max-body-bytes", "65536", "--max-tokens-limit", "512")
    yield s
    s.stop()


def chat_body(**kw):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hello, how are you?"}],
            "max_tokens": 8, "temperature": 0}
    body.update(kw)
    return body


def test_health_503_while_loading_then_exits_on_a_bad_model(tmp_path):
    # Opening a FIFO blocks until a writer comes: the model "loads" for as long as the test wants.
    fifo = str(tmp_path / "model.gguf")
    os.mkfifo(fifo)
    s = Server(fifo, wait_ready=False)
    status, _, body = request(s.port, "GET", "/health")
    assert status == 503
    assert json.loads(body)["error"]["code"] == "model_loading"
    status, _, body = request(s.port, "POST", "/v1/chat/completions", chat_body())
    assert status == 503 and json.loads(body)["error"]["message"]
    with open(fifo, "wb"):
        pass  # EOF: not a model
    assert s.proc.wait(timeout=20) == 2
    time.sleep(0.1)
    assert "not a regular file" in "".join(s.log)


def test_health_models_metrics(server):
    status, _, body = request(server.port, "GET", "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = request(server.port, "GET", "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == "tiny.gguf"
    status, headers, body = request(server.port, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in ["flea_requests_total", "flea_time_to_first_token_seconds_bucket", "flea_queue_depth",
                 "flea_active_sequences", "flea_weight_bytes_read_total", "flea_weight_stall_seconds_total",
                 "flea_time_per_output_token_seconds_count", "flea_generated_tokens_total"]:
        assert name in text, name


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_chat_and_stream(server):
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    out = subprocess.run(["curl", "-sS", "-H", "Content-Type: application/json", "-d", json.dumps(chat_body()), url],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    assert r["choices"][0]["message"]["role"] == "assistant"
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    assert r["usage"]["completion_tokens"] <= 8 and r["usage"]["prompt_tokens"] > 5
    out = subprocess.run(["curl", "-sSN", "-d", json.dumps(chat_body(stream=True)), url],
                         check=True, capture_output=True, text=True).stdout
    events = [e[6:] for e in out.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == r["choices"][0]["message"]["content"]  # temperature 0: the same text
    assert chunks[-1]["choices"][0]["finish_reason"] == r["choices"][0]["finish_reason"]


def test_stdlib_client_streaming_completion(server):
    body = {"prompt": "The quick brown fox", "max_tokens": 10, "temperature": 0}
    status, _, plain = request(server.port, "POST", "/v1/completions", body)
    assert status == 200
    plain = json.loads(plain)
    assert plain["object"] == "text_completion"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions",
                 body=json.dumps(dict(body, stream=True, stream_options={"include_usage": True})),
                 headers={"Content-Type": "application/json", "Accept-Encoding": "gzip"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    assert resp.getheader("Content-Encoding") is None  # tokens must not wait in a compressor
    events = list(sse_events(resp))
    conn.close()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == plain["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    # One chunk per token (a token whose text is held back, e.g. half a UTF-8 character, joins the next).
    assert len(chunks) - 2 <= plain["usage"]["completion_tokens"]
    assert len(chunks) - 2 >= plain["usage"]["completion_tokens"] // 2


def test_stop_string(server):
    status, _, body = request(server.port, "POST", "/v1/completions",
                              {"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0})
    text = json.loads(body)["choices"][0]["text"]
    assert len(text) >= 6
    stop = text[3:6]
    status, _, body = request(server.port, "POST", "/v1/completions",
                              {"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0, "stop": [stop]})
    r = json.loads(body)
    assert r["choices"][0]["text"] == text[:text.index(stop)]
    assert r["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("method,path,body,status,code", [
    ("POST", "/v1/chat/completions", b"{not json", 400, "invalid_json"),
    ("POST", "/v1/chat/completions", b"[]", 400, "invalid_json"),
    ("POST", "/v1/chat/completions", chat_body(temperature="hot"), 400, "invalid_type"),
    ("POST", "/v1/chat/completions", chat_body(messages="hi"), 400, "invalid_type"),
    ("POST", "/v1/chat/completions", chat_body(max_tokens=-1), 400, "invalid_value"),
    ("POST", "/v1/chat/completions", chat_body(max_tokens=100000), 400, "invalid_value"),
    ("POST", "/v1/chat/completions", chat_body(temprature=0.5), 400, "unknown_field"),
    ("POST", "/v1/chat/completions", chat_body(n=2), 400, "unsupported_value"),
    ("POST", "/v1/completions", {"prompt": " ".join(["word"] * 400)}, 400, "context_length_exceeded"),
    ("POST", "/v1/completions", {"prompt": [1, 2, 3]}, 400, "unsupported_value"),
    ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
    ("POST", "/health", b"{}", 405, "method_not_allowed"),
    ("GET", "/v2/nothing", None, 404, "not_found"),
    ("POST", "/v1/chat/completions", b"x" * 100000, 413, "body_too_large"),
])
def test_errors_are_openai_shaped(server, method, path, body, status, code):
    got, headers, data = request(server.port, method, path, body)
    assert got == status, data
    err = json.loads(data)["error"]
    assert err["code"] == code and err["message"] and err["type"]
    assert request(server.port, "GET", "/health")[0] == 200


def test_huge_declared_body_is_refused_without_reading_it(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        t0 = time.time()
        reply = s.recv(65536)
        while not reply.endswith(b"}"):
            reply += s.recv(65536)
        assert time.time() - t0 < 2, "the server waited for the body"
        assert s.recv(4096) == b"", "the connection must be closed: its unread body is not a request"
    reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply
    assert json.loads(reply[reply.index("{"):])["error"]["code"] == "body_too_large"
    assert request(server.port, "GET", "/health")[0] == 200


def test_api_key(model):
    s = Server(model, "--api-key", "sekret", "--parallel", "1", "--ctx", "128")
    try:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}]:
            status, h, body = request(s.port, "POST", "/v1/chat/completions", chat_body(max_tokens=1), headers)
            assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        assert request(s.port, "GET", "/v1/models")[0] == 401
        assert request(s.port, "GET", "/health")[0] == 200
        status, _, _ = request(s.port, "POST", "/v1/chat/completions", chat_body(max_tokens=1),
                               {"Authorization": "Bearer sekret"})
        assert status == 200
    finally:
        s.stop()


def test_queue_full_is_503(model):
    s = Server(model, "--parallel", "1", "--queue", "1", "--ctx", "256")
    try:
        body = {"prompt": "Count:", "max_tokens": 60, "temperature": 0}
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            results = list(ex.map(lambda _: request(s.port, "POST", "/v1/completions", body), range(6)))
        statuses = sorted(r[0] for r in results)
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
        assert set(statuses) <= {200, 503}
        for status, headers, data in results:
            if status == 503:
                assert json.loads(data)["error"]["code"] == "queue_full"
                assert headers.get("Retry-After") == "1"
    finally:
        s.stop()


def test_clients_vanishing_mid_stream_free_their_slots(server):
    before = metric(server.port, "flea_generated_tokens_total")
    body = json.dumps({"prompt": "Tell me a long story", "max_tokens": 240, "temperature": 0, "stream": True})
    socks = []
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        socks.append(s)
    for s in socks:
        got = b""
        while got.count(b"data: ") < 2:  # two tokens arrived: the sequence is decoding
            got += s.recv(4096)
    for i, s in enumerate(socks):
        if i % 2:  # half reset the connection, half close it politely
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    deadline = time.time() + 10
    while metric(server.port, "flea_active_sequences") != 0:
        assert time.time() < deadline, "slots of vanished clients were not freed"
        time.sleep(0.05)
    generated = metric(server.port, "flea_generated_tokens_total") - before
    assert generated < 6 * 240 / 2, f"{generated} tokens: generation went on after the clients left"
    assert request(server.port, "GET", "/health")[0] == 200


def test_1000_idle_connections_and_garbage(server):
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(1000)]
    try:
        t0 = time.time()
        status, _, _ = request(server.port, "GET", "/health", timeout=10)
        assert status == 200 and time.time() - t0 < 5, "health check waited behind idle connections"
        status, _, _ = request(server.port, "POST", "/v1/completions",
                               {"prompt": "hi", "max_tokens": 2}, timeout=30)
        assert status == 200
        for s in idle[:20]:
            s.sendall(b"GARBAGE \x00\xff\r\n\r\n")
        for s in idle[20:40]:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Le")  # and never the rest
        for s in idle[:20]:
            reply = s.recv(4096)
            assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:80]
    finally:
        for s in idle:
            s.close()
    assert request(server.port, "GET", "/health")[0] == 200


def test_1000_requests_at_concurrency_8_without_errors_or_rss_growth(server):
    def worker(n, out):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)  # keep-alive
        for i in range(n):
            body = json.dumps({"prompt": f"Request number {i}", "max_tokens": 2, "temperature": 0.7, "seed": i})
            try:
                conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                out.append(r.status if r.status != 200 or json.loads(data)["usage"]["completion_tokens"] >= 1 else -1)
            except (ConnectionError, http.client.HTTPException, socket.timeout) as e:
                out.append(str(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.close()

    def run(total):
        outs = [[] for _ in range(8)]
        threads = [threading.Thread(target=worker, args=(total // 8, outs[k])) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [x for o in outs for x in o]

    warm = run(200)  # warm-up: thread pool, scratch buffers, allocator arenas reach their size
    rss_warm = server.rss_kb()
    rest = run(800)
    rss_end = server.rss_kb()
    results = warm + rest
    assert len(results) == 1000
    errors = [r for r in results if r != 200]
    assert not errors, errors[:10]
    # 800 requests after warm-up: a leak of even 8 KiB per request would show as 6 MiB.
    assert rss_end - rss_warm < 6 * 1024, f"RSS grew {rss_warm} -> {rss_end} kB"


def test_openai_npm_client(server):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not os.path.isdir(os.path.join(CLIENT_DIR, "node_modules", "openai")):
        pytest.skip("the openai npm package is not installed (scripts/setup.sh --deps runs npm ci in tests/serve/client)")
    out = subprocess.run(["node", os.path.join(CLIENT_DIR, "openai_client.mjs"),
                          f"http://127.0.0.1:{server.port}/v1", "unused-key"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["object"] == "chat.completion"
    assert r["finish_reason"] in ("stop", "length")
    assert r["usage"]["completion_tokens"] >= 1
    assert r["stream_text"] == r["text"]  # temperature 0
    assert r["stream_finish_reason"] == r["finish_reason"]
    assert r["stream_usage"] == r["usage"]
    assert r["stream_chunks"] >= 2
    assert r["error_status"] == 400


def test_sigterm_during_streams_exits_cleanly(model):
    s = Server(model, "--parallel", "2", "--ctx", "256")
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "Go on", "max_tokens": 240, "stream": True}))
    resp = conn.getresponse()
    assert resp.status == 200
    first = next(sse_events(resp))
    assert json.loads(first)["choices"]
    s.stop()  # exits 0 within 20 s with a stream open
    conn.close()
