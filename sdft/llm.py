"""A cached client for any OpenAI-compatible chat-completions endpoint.

Used by the LLM judge (evaluation) and by demonstration / QA generation (data preparation).

* Endpoint from ``base_url`` or ``$OPENAI_BASE_URL``; key from ``api_key`` or ``$OPENAI_API_KEY``.
  The key is never written anywhere: cache rows are keyed by a hash of (model, request), and ``repr`` hides it.
  The endpoint is recorded (``base_url``, ``repr``, log lines, errors) only through :func:`redact_url`: without
  user, password, query string or fragment, which may carry a key. A query string of the given URL is sent as
  query parameters of every request (``default_query``), not glued into the request path.
* Persistent SQLite cache keyed by the model name and the full request (messages, n, temperature, extra
  parameters), so a rerun costs no request. ``n_requests`` counts the calls that reached the endpoint.
* Bounded concurrency (a thread pool) and retries with exponential backoff on rate limits (429),
  server errors (5xx), time-outs, connection errors and replies that are not a chat completion (not JSON, or no
  ``choices``: a proxy's error page answered with HTTP 200), one line on stderr per retry (attempt, wait, error).
  Giving up is an :class:`EndpointError` naming the model, the endpoint and the last error. Other errors propagate
  at once.
* Bounded time: each attempt waits at most ``timeout`` seconds for a reply, and one request (all its attempts
  and back-off waits together) at most ``deadline`` seconds; past it, :class:`DeadlineExceeded` names the
  endpoint and how many requests completed. In :meth:`CachedChatClient.complete_many` the first failure stops
  the batch (no new request or attempt is sent), so a hanging endpoint fails it within about ``deadline`` +
  ``timeout`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from sdft.errors import UserError

Messages = list[dict[str, str]]
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_DEADLINE_S = 300.0


def redact_url(url: str | None) -> str | None:
    """``url`` as it may be recorded: scheme, host, port and path, without user, password, query or fragment
    (``https://user:pw@host/v1?key=k`` -> ``https://host/v1``). ``None`` stays ``None``."""
    if url is None:
        return None
    parts = urlsplit(str(url))
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _split_query(url: str | None) -> tuple[str | None, dict[str, str] | None]:
    """(``url`` without its query string and fragment, the query as parameters or None)."""
    if url is None:
        return None, None
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), dict(parse_qsl(parts.query))


class EndpointError(UserError, RuntimeError):
    """An endpoint that keeps failing or answers with something that is not a chat completion; the message names
    the model, the endpoint (redacted) and what came back."""


class DeadlineExceeded(UserError, TimeoutError):
    """A request got no reply within the client's deadline (the endpoint hangs, or is too slow)."""

    def __init__(self, model: str, endpoint: str, deadline: float, attempts: int, last_error: str,
                 completed: int, total: int | None = None):
        self.model, self.endpoint, self.deadline, self.attempts = model, endpoint, deadline, attempts
        self.last_error, self.completed, self.total = last_error, completed, total
        done = (f"{completed} of {total} requests of this batch completed" if total is not None
                else f"{completed} requests completed by this client")
        super().__init__(f"{model} at {endpoint}: no reply within the {deadline:g} s deadline ({attempts} attempts, "
                         f"last error {last_error}); {done}. Check the endpoint, or allow more time (the deadline "
                         "and per-attempt timeout options, e.g. --judge-deadline / --judge-timeout of eval.run)")

    def in_batch(self, completed: int, total: int) -> DeadlineExceeded:
        return DeadlineExceeded(self.model, self.endpoint, self.deadline, self.attempts, self.last_error,
                                completed, total)


class _InvalidReply(ValueError):
    """A reply that parsed as JSON but is no chat completion (no ``choices``)."""


class _Aborted(RuntimeError):
    """A request of a batch that stopped (another request of it failed) before or between its attempts."""


def default_cache_path() -> Path:
    from sdft.models import cache_dir

    return cache_dir() / "llm_cache.sqlite"


class _Cache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, model TEXT, response TEXT)")
        self._db.commit()

    def get(self, key: str) -> list[str] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM completions WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, model: str, response: list[str]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO completions (key, model, response) VALUES (?, ?, ?)",
                (key, model, json.dumps(response)),
            )
            self._db.commit()


class CachedChatClient:
    """``timeout``: seconds one attempt waits for a reply; ``deadline``: seconds one request may take, all its
    attempts and back-off waits together (``None``: bounded by ``max_retries`` only)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        cache_path: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = 6,
        initial_backoff: float = 1.0,
        temperature: float | None = 0.0,
        timeout: float = DEFAULT_TIMEOUT_S,
        extra_params: dict[str, Any] | None = None,
        deadline: float | None = DEFAULT_DEADLINE_S,
    ):
        self.model = model
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.base_url = redact_url(self._base_url)  # what may be recorded
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.temperature = temperature
        if timeout <= 0 or (deadline is not None and deadline <= 0):
            raise ValueError(f"timeout and deadline must be positive seconds, got {timeout!r} and {deadline!r}")
        self.timeout = timeout
        self.deadline = deadline
        self.extra_params = dict(extra_params or {})
        self._cache = _Cache(Path(cache_path) if cache_path else default_cache_path())
        self._client = None
        self._count_lock = threading.Lock()
        self.n_requests = 0
        self.n_cache_hits = 0
        self.n_completed = 0  # requests the endpoint answered

    def __repr__(self) -> str:
        return f"CachedChatClient(model={self.model!r}, base_url={self.base_url!r}, api_key=<hidden>)"

    @property
    def endpoint(self) -> str:
        """The endpoint for messages: the redacted base URL, or the openai library's default."""
        return self.base_url or "the default OpenAI endpoint"

    def _openai(self):
        if self._client is None:
            import openai

            if not self._api_key:
                raise RuntimeError(
                    "no API key: set OPENAI_API_KEY (any non-empty value for a local OpenAI-compatible server)"
                )
            url, query = _split_query(self._base_url)
            self._client = openai.OpenAI(base_url=url, api_key=self._api_key, timeout=self.timeout,
                                         max_retries=0, default_query=query)
        return self._client

    def _key(self, messages: Messages, n: int, temperature: float | None) -> str:
        request = {"model": self.model, "messages": messages, "n": n, "temperature": temperature,
                   "extra": self.extra_params}
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()

    def _request(self, messages: Messages, n: int, temperature: float | None,
                 abort: threading.Event | None = None) -> list[str]:
        import openai

        params: dict[str, Any] = {"model": self.model, "messages": messages, **self.extra_params}
        if n != 1:
            params["n"] = n
        if temperature is not None:
            params["temperature"] = temperature
        end = None if self.deadline is None else time.monotonic() + self.deadline
        delay = self.initial_backoff
        attempt = 0
        while True:
            left = None if end is None else end - time.monotonic()
            try:
                with self._count_lock:
                    self.n_requests += 1
                response = self._openai().chat.completions.create(
                    **params, timeout=self.timeout if left is None else max(min(self.timeout, left), 0.001))
                choices = getattr(response, "choices", None)
                if not isinstance(choices, list) or not choices:
                    raise _InvalidReply(f"a reply without choices ({type(response).__name__})")
                with self._count_lock:
                    self.n_completed += 1
                return [choice.message.content or "" for choice in choices]
            except openai.BadRequestError as err:
                # Some models (gpt-5 family, o-series) reject a non-default temperature with a 400 that names
                # the parameter: drop it and retry at once (not counted as a retry); other 400s propagate.
                if "temperature" in params and "temperature" in str(err).lower():
                    params.pop("temperature")
                    continue
                raise
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                    openai.APIConnectionError, openai.APIResponseValidationError, json.JSONDecodeError,
                    _InvalidReply) as err:
                # a reply that is not JSON (HTTP 200 from a proxy's error page, a wrong base_url) is retried like a
                # server error: it is often passing, and when it is not the error names the endpoint
                error = (f"the reply is not JSON ({err})" if isinstance(err, json.JSONDecodeError)
                         else str(err) if isinstance(err, _InvalidReply) else type(err).__name__)
                if end is not None and time.monotonic() + delay >= end:
                    raise DeadlineExceeded(self.model, self.endpoint, self.deadline, attempt + 1, error,
                                           self.n_completed) from None
                if attempt >= self.max_retries:
                    raise EndpointError(f"{self.model} at {self.endpoint}: giving up after {attempt + 1} attempts: "
                                        f"{error}") from err
                attempt += 1
                if abort is not None and abort.is_set():
                    raise _Aborted() from None
                # one write per line: the pool's threads retry at the same moments
                sys.stderr.write(f"[llm] {self.model} at {self.endpoint}: attempt {attempt} of {self.max_retries + 1} "
                                 f"failed ({error}); retrying in {delay:g} s\n")
                sys.stderr.flush()
                if abort is not None and abort.wait(delay):
                    raise _Aborted() from None
                if abort is None:
                    time.sleep(delay)
                delay *= 2

    def complete(self, messages: Messages, n: int = 1, temperature: float | None = None) -> list[str]:
        """``n`` completions of one conversation, from the cache when this exact request was made before."""
        return self._complete(messages, n, temperature)

    def _complete(self, messages: Messages, n: int, temperature: float | None,
                  abort: threading.Event | None = None) -> list[str]:
        temperature = self.temperature if temperature is None else temperature
        key = self._key(messages, n, temperature)
        cached = self._cache.get(key)
        if cached is not None:
            with self._count_lock:
                self.n_cache_hits += 1
            return cached
        result = self._request(messages, n, temperature, abort)
        self._cache.put(key, self.model, result)
        return result

    def complete_many(self, conversations: list[Messages], n: int = 1, temperature: float | None = None,
                      progress: str | None = None) -> list[list[str]]:
        """Many conversations, at most ``max_concurrency`` requests in flight; results in input order. The first
        failure stops the batch: requests not started are not sent, those in flight make no further attempt; the
        error is raised (a :class:`DeadlineExceeded` then says how many requests of this batch completed)."""
        from tqdm.auto import tqdm

        abort = threading.Event()

        def one(conversation: Messages) -> list[str]:
            if abort.is_set():
                raise _Aborted()
            try:
                return self._complete(conversation, n, temperature, abort)
            except BaseException:
                abort.set()
                raise

        pool = ThreadPoolExecutor(max_workers=self.max_concurrency)
        futures = [pool.submit(one, c) for c in conversations]
        try:
            return [f.result() for f in tqdm(futures, desc=progress or self.model, disable=progress is None)]
        except BaseException:
            abort.set()
            pool.shutdown(wait=True, cancel_futures=True)
            finished = [f for f in futures if f.done() and not f.cancelled()]
            first = next((f.exception() for f in finished
                          if f.exception() is not None and not isinstance(f.exception(), _Aborted)), None)
            if isinstance(first, DeadlineExceeded):
                completed = sum(f.exception() is None for f in finished)
                raise first.in_batch(completed, len(futures)) from None
            if first is not None:
                raise first from None
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
