"""Fuzzing g2lstm-serve over real sockets: a few hundred malformed, oversized (declared or
chunked without a length), deeply nested, wrongly typed and wrongly encoded bodies, query
strings and headers, against both APIs. No answer may be a 5xx or a traceback in the log,
the server must stay healthy and translate correctly afterwards, and its memory must stay
bounded. Deterministic (one seeded generator), bounded in count and time."""
import json
import random
import socket
import time

import pytest

from served_model import SENTENCES, interactive, running_server, served_model

PATHS = ("/translate", "/v1/translate")
FIELDS = {"/translate": ["q", "source", "target", "format", "alternatives", "api_key"],
          "/v1/translate": ["q", "model", "source", "target", "beam", "nbest", "gates", "gate_layer", "hard_gates",
                            "api_key"]}
RSS_GROWTH_LIMIT_KB = 64 * 1024
TIME_LIMIT_S = 60


def odd_value(rng: random.Random, depth: int = 0):
    """A JSON value of a random type, some of them nested, huge or strangely encoded."""
    choice = rng.randrange(14)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 2 ** 31, 2 ** 63, -(2 ** 70)])
    if choice == 3:
        return rng.choice([0.5, -1e308, 1e-320, 3.0])
    if choice == 4:
        return ""
    if choice == 5:
        return "w1 " * rng.choice([1, 50, 900, 3000])
    if choice == 6:
        return "".join(chr(rng.choice([0, 7, 0x85, 0x2028, 0xFEFF, 0x1F600, 0x10FFFF, 0x0301, 0x202E]))
                       for _ in range(rng.randrange(1, 40)))
    if choice == 7 and depth < 3:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if choice == 8 and depth < 3:
        return {rng.choice(["q", "a", ""]): odd_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}
    if choice == 9:
        return ["w1 w2"] * rng.choice([0, 1, 65, 2000])
    if choice == 10:
        return rng.choice(["de", "en", "auto", "xx", "DE", "de\x00"])
    if choice == 11:
        return rng.choice(["text", "html", "TEXT"])
    return rng.choice(SENTENCES)


def json_bodies(rng: random.Random, count: int):
    for _ in range(count):
        path = rng.choice(PATHS)
        body = {name: odd_value(rng) for name in FIELDS[path] if rng.random() < 0.6}
        if rng.random() < 0.2:
            body[rng.choice(["beem", "q\x00", "ü", ""])] = 1
        yield path, {"Content-Type": "application/json"}, json.dumps(body, allow_nan=True).encode()


def raw_cases():
    """(path, headers, body) pairs that no JSON encoder would write."""
    deep = [b"[" * 200_000, b'{"q":' * 50_000, b'{"q": ' + b"[" * 5_000 + b'"w1"' + b"]" * 5_000 + b"}"]
    malformed = [b"", b"{", b'{"q": "w1",}', b"NaN", b'{"q": NaN}', b"\xff\xfe{\x00}\x00", b'{"q": "\xff\xfe"}',
                 b'\xef\xbb\xbf{"q": "w1", "source": "de", "target": "en"}', b'{"q": "\\ud800", "source": "de"}',
                 '{"q": "w1"}'.encode("utf-16"), b"null", b"[]", b"123", b'"q"', b'{"q": 1e99999}',
                 b'{"q": "w1"} trailing', b'{"q":"w1","q":"w2","source":"de","target":"en"}']
    cases = []
    for path in PATHS:
        for body in deep + malformed:
            cases.append((path, {"Content-Type": "application/json"}, body))
        forms = [b"q=w1+w2&source=de&target=en&q=%FF%FE", b"q=%zz&source=de", b"&&&==&q", b"q=" + b"w1+" * 5000,
                 b"&".join(b"f%d=1" % k for k in range(300)), b"q=w1&beam=abc&nbest=-1&source=de&target=en"]
        for body in forms:
            cases.append((path, {"Content-Type": "application/x-www-form-urlencoded"}, body))
        boundary = "b0undary"
        multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"q\"; filename=\"a.txt\"\r\n"
                     f"Content-Type: text/plain\r\n\r\n{'w1 ' * 1000}\r\n--{boundary}--\r\n").encode()
        cases += [(path, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, multipart),
                  (path, {"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\nbroken"),
                  (path, {"Content-Type": "multipart/form-data"}, b"no boundary"),
                  (path, {"Content-Type": "text/plain"}, b"q=w1"),
                  (path, {"Content-Type": "application/json; charset=latin-1"}, '{"q": "ä"}'.encode("latin-1")),
                  (path, {"Content-Type": "application/xml"}, b"<q>w1</q>"),
                  (path, {"Content-Type": "\x00\x01"}, b"{}"),
                  (path, {"Content-Type": "application/json", "Authorization": "Bearer \xff"}, b"{}"),
                  (path, {"Content-Type": "application/json", "Authorization": "Basic Zm9vOmJhcg=="}, b"{}"),
                  (path, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00junk"),
                  (path, {"Content-Type": "application/json"}, b"x" * 3_000_000)]
    return cases


def send(url: str, method: str, path: str, headers: dict, body: bytes, chunked: bool = False,
         declared: int = None, timeout: float = 20) -> int:
    """One request over a raw socket (so that nothing fixes our mistakes); the status, or 0
    when the server closed the connection without an answer."""
    host, port = url.split("//", 1)[1].split(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        step = 64 * 1024
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[k:k + step]), body[k:k + step])
                           for k in range(0, len(body), step)) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body) if declared is None else declared}")
        payload = body
    head = "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(head + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) before reading everything, then closed
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
    status = answer.split(b"\r\n", 1)[0].split(b" ")
    return int(status[1]) if len(status) > 1 and status[1].isdigit() else 0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return served_model(tmp_path_factory)


def test_fuzzed_requests_get_no_5xx_and_leave_the_server_healthy(model):
    rng = random.Random(26)
    expected = interactive(model["folder"], SENTENCES[:2])
    with running_server(model["folder"], "--request-timeout", "20") as server:
        url = server.url
        for sentence in SENTENCES:  # warm up: the first requests allocate what later ones reuse
            assert send(url, "POST", "/translate", {"Content-Type": "application/json"},
                        json.dumps({"q": sentence, "source": "de", "target": "en"}).encode()) == 200
        before = rss_kb(server.proc.pid)
        start = time.monotonic()
        statuses = []
        cases = list(json_bodies(rng, 240)) + raw_cases()
        for path, headers, body in cases:
            statuses.append((path, body[:60], send(url, "POST", path, headers, body)))
        for path in PATHS:  # chunked without Content-Length, over the limit and within it
            for body in (b'{"q": "' + b"w1 " * 1_000_000 + b'"}',
                         json.dumps({"q": SENTENCES[0], "source": "de", "target": "en"}).encode()):
                statuses.append((path, b"chunked " + body[:40],
                                 send(url, "POST", path, {"Content-Type": "application/json"}, body, chunked=True)))
            # a declared length longer than what comes: the client gives up; shorter: the rest is junk
            statuses.append((path, b"short body", send(url, "POST", path, {"Content-Type": "application/json"},
                                                       b'{"q": "w1"}', declared=5)))
            try:
                send(url, "POST", path, {"Content-Type": "application/json"}, b'{"q"', declared=1000, timeout=0.5)
            except socket.timeout:
                pass
            for query in ("q=%FF&source=de&target=en", "q=" + "w1+" * 3000 + "&source=de&target=en",
                          "&".join(f"q=w{k % 10}" for k in range(200)) + "&source=de&target=en", "beam=1e999&q=w1"):
                statuses.append((path, query[:40].encode(), send(url, "POST", f"{path}?{query}", {}, b"")))
        for method, path in (("GET", "/translate"), ("PUT", "/v1/translate"), ("DELETE", "/health"),
                             ("GET", "/static/../../etc/passwd"), ("GET", "/%00"), ("POST", "/languages")):
            statuses.append((path, method.encode(), send(url, method, path, {}, b"")))
        elapsed = time.monotonic() - start
        server_errors = [case for case in statuses if case[2] >= 500 or case[2] == 0]
        assert not server_errors, server_errors[:10]
        assert len(statuses) >= 300 and elapsed < TIME_LIMIT_S
        assert {status for _, _, status in statuses} >= {200, 400, 413, 415}
        with server.client() as client:
            assert client.get("/health").json()["status"] == "ok"
            again = client.post("/translate", json={"q": SENTENCES[:2], "source": "de", "target": "en"})
            assert again.json() == {"translatedText": expected}
        growth = rss_kb(server.proc.pid) - before
        assert growth < RSS_GROWTH_LIMIT_KB, f"RSS grew by {growth} kB"
        assert server.proc.poll() is None
    assert "Traceback" not in server.log and "unexpected error" not in server.log, server.log[-3000:]
