"""Concurrent URL downloader with an on-disk cache (standard library only).

>>> df = fetch_urls(urls, "cache/images")        # doctest: +SKIP
>>> df[~df.ok][["url", "status", "error"]]       # doctest: +SKIP

Design
------
* Each URL maps to one cache file, :func:`cache_path` (SHA-1 of the URL plus
  the image extension of the URL path).  A file already in the cache is
  reused without any request (``from_cache=True``, ``attempts=0``).
* Downloads are written to a temporary file in the cache directory and moved
  into place with :func:`os.replace`, so an interrupted run never leaves a
  partial file under the final name.  A body shorter than its
  ``Content-Length`` or an empty body counts as a failure.
* Connection errors, timeouts, incomplete bodies and HTTP 5xx/429 are
  retried with exponential backoff (``backoff * 2**k`` seconds, or the
  server's ``Retry-After`` when larger, capped at 60 s); other HTTP 4xx
  (404, 403, ...) are final after one attempt.
* Failures never raise: they are rows with ``ok=False`` in the returned
  table, and are appended to ``cache_dir/failures.csv`` (url, error, time).
* Duplicate URLs are fetched once.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import http.client
import os
import posixpath
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_USER_AGENT",
    "FAILURES_FILE",
    "is_url",
    "cache_path",
    "fetch_urls",
]

#: URL-path extensions kept on cache file names (lower-cased).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff",
     ".avif", ".heic", ".heif", ".jxl", ".ico"}
)
DEFAULT_USER_AGENT = "nnutils-downloader/0.1 (+python-urllib)"
#: Name of the failure log written inside the cache directory.
FAILURES_FILE = "failures.csv"
COLUMNS = ["url", "path", "ok", "status", "error", "attempts", "from_cache"]

_CHUNK = 1 << 16
_MAX_RETRY_AFTER = 60.0


def is_url(s) -> bool:
    """True if ``s`` is a string holding an ``http://`` or ``https://`` URL with a host.

    Parameters
    ----------
    s : object
        Anything; surrounding whitespace of a string is ignored.

    Returns
    -------
    bool
        False for a non-string, a string that does not parse as a URL, another scheme or a
        URL without a host.
    """
    if not isinstance(s, str):
        return False
    try:
        parts = urllib.parse.urlsplit(s.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def cache_path(url: str, cache_dir) -> Path:
    """Where ``url`` is (or will be) cached.

    Parameters
    ----------
    url : str
    cache_dir : str or os.PathLike

    Returns
    -------
    pathlib.Path
        ``cache_dir / (sha1(url).hexdigest() + ext)`` where ``ext`` is the
        lower-cased extension of the URL *path* (query and fragment ignored)
        if it is in :data:`IMAGE_EXTENSIONS`, else empty.  The URL is hashed
        exactly as given (no normalisation).
    """
    key = hashlib.sha1(url.encode("utf-8")).hexdigest()
    try:
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    except ValueError:
        path = ""
    ext = posixpath.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        ext = ""
    return Path(cache_dir) / f"{key}{ext}"


@dataclass
class _Result:
    url: str
    path: str | None
    ok: bool
    status: int | None
    error: str | None
    attempts: int
    from_cache: bool


class _Retryable(Exception):
    """A failed attempt worth retrying."""

    def __init__(self, error: str, status: int | None = None, wait: float | None = None):
        super().__init__(error)
        self.error = error
        self.status = status
        self.wait = wait


class _Final(Exception):
    """A failed attempt not worth retrying."""

    def __init__(self, error: str, status: int | None = None):
        super().__init__(error)
        self.error = error
        self.status = status


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "timeout"
        return f"URLError: {reason}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"


def _download_once(url: str, dest: Path, timeout: float, user_agent: str) -> int:
    """One GET of ``url`` into ``dest`` (atomically). Returns the HTTP status."""
    req = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept": "*/*"})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        code = exc.code
        wait = _retry_after(exc.headers)
        exc.close()
        msg = f"HTTP {code}: {exc.reason}"
        if code >= 500 or code == 429:
            raise _Retryable(msg, code, wait) from None
        raise _Final(msg, code) from None
    except ValueError as exc:  # malformed URL, unknown scheme
        raise _Final(f"invalid URL: {exc}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(_describe(exc)) from None

    with resp:
        status = resp.status
        expected = resp.headers.get("Content-Length")
        fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".tmp", dir=dest.parent)
        try:
            n = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(_describe(exc), status) from None
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as exc:  # disk full, permissions: not retried
                        raise _Final(f"cannot write cache file: {exc}", status) from None
                    n += len(chunk)
            if expected is not None and expected.isdigit() and n < int(expected):
                raise _Retryable(f"incomplete body: {n} of {expected} bytes", status)
            if n == 0:
                raise _Final("empty body", status)
            os.replace(tmp, dest)
            tmp = None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    return status


def _fetch_one(url, dest, *, retries, timeout, backoff, user_agent) -> _Result:
    if not is_url(url):
        return _Result(url, None, False, None, "not an http(s) URL", 0, False)
    if dest.is_file() and dest.stat().st_size > 0:
        return _Result(url, str(dest), True, None, None, 0, True)
    attempts = 0
    status: int | None = None
    error: str | None = None
    for k in range(max(0, int(retries)) + 1):
        attempts += 1
        try:
            status = _download_once(url, dest, timeout, user_agent)
            return _Result(url, str(dest), True, status, None, attempts, False)
        except _Final as exc:
            return _Result(url, None, False, exc.status, exc.error, attempts, False)
        except _Retryable as exc:
            status, error = exc.status, exc.error
            if k < retries:
                wait = backoff * (2 ** k)
                if exc.wait is not None:
                    wait = max(wait, exc.wait)
                time.sleep(wait)
        except Exception as exc:  # never let one URL kill the run
            return _Result(url, None, False, status, _describe(exc), attempts, False)
    return _Result(url, None, False, status, error, attempts, False)


def _append_failures(cache_dir: Path, rows: list[_Result]) -> None:
    if not rows:
        return
    path = cache_dir / FAILURES_FILE
    new = not path.exists() or path.stat().st_size == 0
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["url", "error", "time"])
        for r in rows:
            w.writerow([r.url, r.error, now])


def fetch_urls(
    urls,
    cache_dir,
    *,
    workers: int = 8,
    retries: int = 3,
    timeout: float = 20.0,
    backoff: float = 0.5,
    progress: bool = True,
    user_agent: str = DEFAULT_USER_AGENT,
):
    """Download ``urls`` into ``cache_dir`` concurrently; never raises for a bad URL.

    Parameters
    ----------
    urls : iterable of str
        May contain duplicates (fetched once) and non-URLs (reported as
        failures without a request).
    cache_dir : str or os.PathLike
        Created if missing.  File names come from :func:`cache_path`.
    workers : int, default 8
        Download threads.
    retries : int, default 3
        Retries *after* the first attempt, so at most ``retries + 1``
        requests per URL.  Only connection errors, timeouts, incomplete
        bodies and HTTP 5xx/429 are retried.
    timeout : float, default 20.0
        Socket timeout in seconds for connecting and for each read (not a
        limit on the total transfer time).
    backoff : float, default 0.5
        Sleep ``backoff * 2**k`` seconds before retry ``k + 1``.
    progress : bool, default True
        Show a tqdm progress bar.
    user_agent : str
        ``User-Agent`` header.

    Returns
    -------
    pandas.DataFrame
        One row per input URL, in input order (duplicates repeat the same
        result), with columns

        ``url`` (str), ``path`` (str cache path, None on failure), ``ok``
        (bool), ``status`` (nullable Int64: HTTP status of the last
        response, <NA> for cache hits and connection errors), ``error`` (str
        or None), ``attempts`` (int, requests made; 0 for cache hits),
        ``from_cache`` (bool).

    Notes
    -----
    Failures of this call are appended to ``cache_dir/failures.csv`` with
    columns ``url, error, time`` (UTC ISO-8601); the file accumulates over
    runs.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    urls = list(urls)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)

    unique: dict = {}
    for u in urls:
        if u not in unique:
            unique[u] = None

    results: dict = {}
    failures: list[_Result] = []
    kw = dict(retries=retries, timeout=timeout, backoff=backoff, user_agent=user_agent)

    def dest_for(u):
        return cache_path(u, cache_dir) if isinstance(u, str) else cache_dir / "_invalid"

    bar = tqdm(total=len(unique), desc="download", unit="url", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=max(1, int(workers)))
    try:
        futures = {pool.submit(_fetch_one, u, dest_for(u), **kw): u for u in unique}
        for fut in as_completed(futures):
            u = futures[fut]
            try:
                r = fut.result()
            except Exception as exc:  # defensive: _fetch_one should not raise
                r = _Result(u, None, False, None, _describe(exc), 0, False)
            results[u] = r
            if not r.ok:
                failures.append(r)
            bar.update(1)
            bar.set_postfix(failed=len(failures), refresh=False)
    except BaseException:
        # Ctrl-C: drop queued downloads instead of waiting for all of them;
        # running ones finish their current attempt (files are atomic).
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        bar.close()
        _append_failures(cache_dir, failures)

    rows = [results[u] for u in urls]
    df = pd.DataFrame(
        {
            "url": [r.url for r in rows],
            "path": pd.Series([r.path for r in rows], dtype=object),
            "ok": pd.Series([r.ok for r in rows], dtype=bool),
            "status": pd.array([r.status for r in rows], dtype="Int64"),
            "error": pd.Series([r.error for r in rows], dtype=object),
            "attempts": pd.Series([r.attempts for r in rows], dtype="int64"),
            "from_cache": pd.Series([r.from_cache for r in rows], dtype=bool),
        },
        columns=COLUMNS,
    )
    return df
