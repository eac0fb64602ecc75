"""Tests for nnutils.data.download against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import csv
import datetime
import io
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from PIL import Image

from nnutils.data.download import COLUMNS, cache_path, fetch_urls, is_url


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


IMAGES = {
    "/img/red.png": _png((255, 0, 0)),
    "/img/green.png": _png((0, 255, 0)),
    "/img/blue.jpg": _png((0, 0, 255)),  # content type is irrelevant to the cache
}
FAST = dict(progress=False, backoff=0.01, timeout=5.0)


class _Server:
    def __init__(self):
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path):
        return self.base + path

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code, body=b"", length=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                with server.lock:
                    server.hits[path] += 1
                    n = server.hits[path]
                if path in IMAGES:
                    self._send(200, IMAGES[path])
                elif path == "/flaky.png":  # 500 twice, then the image
                    if n <= 2:
                        self._send(500, b"oops")
                    else:
                        self._send(200, IMAGES["/img/red.png"])
                elif path == "/always500.png":
                    self._send(503, b"down")
                elif path == "/missing.png":
                    self._send(404, b"not here")
                elif path == "/forbidden.png":
                    self._send(403, b"no")
                elif path == "/slow.png":
                    server.stop.wait(3.0)  # far beyond the client timeout
                    if not server.stop.is_set():
                        self._send(200, IMAGES["/img/red.png"])
                elif path == "/short.png":  # promises 1000 bytes, sends 10
                    self._send(200, b"0123456789", length=1000)
                elif path == "/empty.png":
                    self._send(200, b"")
                else:
                    self._send(404)

        return Handler


@pytest.fixture
def server():
    s = _Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.stop.set()
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(5)


def _read_failures(cache_dir):
    with open(cache_dir / "failures.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- #
def test_is_url():
    assert is_url("http://example.com/a.jpg")
    assert is_url("HTTPS://example.com")
    assert not is_url("ftp://example.com/a.jpg")
    assert not is_url("/local/file.jpg")
    assert not is_url("http://")
    assert not is_url(None) and not is_url(float("nan"))


def test_cache_path(tmp_path):
    p = cache_path("http://h/x/photo.JPG?size=large#frag", tmp_path)
    assert p.parent == tmp_path and p.suffix == ".jpg" and len(p.stem) == 40
    assert cache_path("http://h/x/photo.JPG?size=large#frag", tmp_path) == p
    assert cache_path("http://h/x/photo.JPG?size=small", tmp_path) != p
    assert cache_path("http://h/x/page.php?id=3", tmp_path).suffix == ""
    assert cache_path("http://h/x/noext", tmp_path).suffix == ""
    assert cache_path("http://h/a.webp", str(tmp_path)).suffix == ".webp"


def test_fetch_dedup_and_cache(server, tmp_path):
    urls = [server.url(p) for p in IMAGES] + [server.url("/img/red.png")]
    df = fetch_urls(urls, tmp_path, workers=4, **FAST)
    assert list(df.columns) == COLUMNS
    assert df["url"].tolist() == urls  # one row per input, input order
    assert df["ok"].all() and not df["from_cache"].any()
    assert df["status"].tolist() == [200] * 4
    assert df["attempts"].tolist() == [1] * 4
    assert df["error"].isna().all()
    assert server.hits["/img/red.png"] == 1  # duplicate fetched once
    for url, path in zip(df["url"], df["path"]):
        assert path == str(cache_path(url, tmp_path))
        with open(path, "rb") as fh:
            assert fh.read() == IMAGES[url[len(server.base):]]
    assert df.loc[2, "path"].endswith(".jpg")

    before = sum(server.hits.values())
    again = fetch_urls(urls, tmp_path, workers=4, **FAST)
    assert sum(server.hits.values()) == before  # no new request at all
    assert again["ok"].all() and again["from_cache"].all()
    assert again["attempts"].tolist() == [0] * 4
    assert again["status"].isna().all()
    assert again["path"].tolist() == df["path"].tolist()
    assert not (tmp_path / "failures.csv").exists()  # nothing failed


def test_retry_on_500_then_success(server, tmp_path):
    df = fetch_urls([server.url("/flaky.png")], tmp_path, retries=3, **FAST)
    row = df.iloc[0]
    assert bool(row.ok) and row.status == 200 and row.attempts == 3
    assert server.hits["/flaky.png"] == 3


def test_5xx_retries_exhausted(server, tmp_path):
    df = fetch_urls([server.url("/always500.png")], tmp_path, retries=2, **FAST)
    row = df.iloc[0]
    assert not row.ok and row.status == 503 and row.attempts == 3
    assert "503" in row.error and row.path is None


@pytest.mark.parametrize("path, code", [("/missing.png", 404), ("/forbidden.png", 403)])
def test_client_errors_are_not_retried(server, tmp_path, path, code):
    url = server.url(path)
    df = fetch_urls([url], tmp_path, retries=3, **FAST)  # must not raise
    row = df.iloc[0]
    assert not row.ok and row.status == code and row.attempts == 1
    assert str(code) in row.error and row.path is None
    assert server.hits[path] == 1
    assert not cache_path(url, tmp_path).exists()


def test_timeout(server, tmp_path):
    # the server answers /slow.png only after 3 s: a client that ignored the 0.3 s timeout
    # would get the image (ok, status 200) instead of two timed-out attempts
    url = server.url("/slow.png")
    df = fetch_urls([url], tmp_path, retries=1, progress=False, timeout=0.3, backoff=0.01)
    row = df.iloc[0]
    assert not row.ok and row.attempts == 2 and row.error == "timeout"
    assert pd.isna(row.status) and row.path is None
    assert server.hits["/slow.png"] == 2
    assert not cache_path(url, tmp_path).exists()


def test_incomplete_body_leaves_no_file(server, tmp_path):
    url = server.url("/short.png")
    df = fetch_urls([url], tmp_path, retries=1, **FAST)
    row = df.iloc[0]
    assert not row.ok and row.attempts == 2 and "incomplete" in row.error
    assert not cache_path(url, tmp_path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failures.csv"]  # no .part


def test_empty_body_is_a_failure(server, tmp_path):
    url = server.url("/empty.png")
    row = fetch_urls([url], tmp_path, **FAST).iloc[0]
    assert not row.ok and row.attempts == 1 and row.error == "empty body"
    assert not cache_path(url, tmp_path).exists()


def test_connection_refused_and_non_urls(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    urls = [f"http://127.0.0.1:{port}/x.png", "not a url", None]
    df = fetch_urls(urls, tmp_path, retries=1, **FAST)
    assert not df["ok"].any()
    assert df.loc[0, "attempts"] == 2 and "URLError" in df.loc[0, "error"]
    assert df.loc[1, "attempts"] == 0 and df.loc[1, "error"] == "not an http(s) URL"
    assert df.loc[2, "attempts"] == 0


def test_failures_csv_lists_and_appends(server, tmp_path):
    bad = [server.url("/missing.png"), server.url("/always500.png")]
    urls = [server.url("/img/red.png"), *bad]
    fetch_urls(urls, tmp_path, retries=1, **FAST)
    rows = _read_failures(tmp_path)
    assert list(rows[0]) == ["url", "error", "time"]
    assert sorted(r["url"] for r in rows) == sorted(bad)
    errors = {r["url"]: r["error"] for r in rows}
    assert errors == {bad[0]: "HTTP 404: Not Found", bad[1]: "HTTP 503: Service Unavailable"}
    for r in rows:  # an ISO-8601 UTC time stamp, seconds precision
        assert datetime.datetime.fromisoformat(r["time"]).utcoffset() == datetime.timedelta(0)
        assert len(r["time"]) == len("2024-01-01T00:00:00+00:00")

    # a second run appends (failures are retried: they were never cached)
    fetch_urls(urls, tmp_path, retries=0, **FAST)
    rows = _read_failures(tmp_path)
    assert len(rows) == 4 and sorted({r["url"] for r in rows}) == sorted(bad)
    assert server.hits["/img/red.png"] == 1


def test_progress_bar_does_not_break(server, tmp_path, capsys):
    df = fetch_urls([server.url("/img/green.png")], tmp_path, progress=True, backoff=0.01)
    assert df["ok"].all()
    assert fetch_urls([], tmp_path, progress=False).shape == (0, len(COLUMNS))
