"""A cached client for any OpenAI-compatible chat-completions endpoint.

Used by the LLM judge (evaluation) and by demonstration / QA generation (data preparation).

* Endpoint from ``base_url`` or ``$OPENAI_BASE_URL``; key from ``api_key`` or ``$OPENAI_API_KEY``.
  The key is never written anywhere: cache rows are keyed by (model, request), and ``repr`` hides it.
* Persistent SQLite cache keyed by the model name and the full request (messages, n, temperature, extra
  parameters), so a rerun costs no request. ``n_requests`` counts the calls that reached the endpoint.
* Bounded concurrency (a thread pool) and retries with exponential backoff on rate limits (429),
  server errors (5xx), time-outs and connection errors. Other errors propagate at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]


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
        timeout: float = 120.0,
        extra_params: dict[str, Any] | None = None,
    ):
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.temperature = temperature
        self.timeout = timeout
        self.extra_params = dict(extra_params or {})
        self._cache = _Cache(Path(cache_path) if cache_path else default_cache_path())
        self._client = None
        self._count_lock = threading.Lock()
        self.n_requests = 0
        self.n_cache_hits = 0

    def __repr__(self) -> str:
        return f"CachedChatClient(model={self.model!r}, base_url={self.base_url!r}, api_key=<hidden>)"

    def _openai(self):
        if self._client is None:
            import openai

            if not self._api_key:
                raise RuntimeError(
                    "no API key: set OPENAI_API_KEY (any non-empty value for a local OpenAI-compatible server)"
                )
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout,
                                         max_retries=0)
        return self._client

    def _key(self, messages: Messages, n: int, temperature: float | None) -> str:
        request = {"model": self.model, "messages": messages, "n": n, "temperature": temperature,
                   "extra": self.extra_params}
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()

    def _request(self, messages: Messages, n: int, temperature: float | None) -> list[str]:
        import openai

        params: dict[str, Any] = {"model": self.model, "messages": messages, **self.extra_params}
        if n != 1:
            params["n"] = n
        if temperature is not None:
            params["temperature"] = temperature
        delay = self.initial_backoff
        attempt = 0
        while True:
            try:
                with self._count_lock:
                    self.n_requests += 1
                response = self._openai().chat.completions.create(**params)
                return [choice.message.content or "" for choice in response.choices]
            except openai.BadRequestError as err:
                # Some models (gpt-5 family, o-series) reject a non-default temperature with a 400 that names
                # the parameter: drop it and retry at once (not counted as a retry); other 400s propagate.
                if "temperature" in params and "temperature" in str(err).lower():
                    params.pop("temperature")
                    continue
                raise
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                    openai.APIConnectionError) as err:
                if attempt >= self.max_retries:
                    raise RuntimeError(f"{self.model}: giving up after {attempt + 1} attempts: {type(err).__name__}") from err
                attempt += 1
                time.sleep(delay)
                delay *= 2

    def complete(self, messages: Messages, n: int = 1, temperature: float | None = None) -> list[str]:
        """``n`` completions of one conversation, from the cache when this exact request was made before."""
        temperature = self.temperature if temperature is None else temperature
        key = self._key(messages, n, temperature)
        cached = self._cache.get(key)
        if cached is not None:
            with self._count_lock:
                self.n_cache_hits += 1
            return cached
        result = self._request(messages, n, temperature)
        self._cache.put(key, self.model, result)
        return result

    def complete_many(self, conversations: list[Messages], n: int = 1, temperature: float | None = None,
                      progress: str | None = None) -> list[list[str]]:
        """Many conversations, at most ``max_concurrency`` requests in flight; results in input order."""
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = [pool.submit(self.complete, c, n, temperature) for c in conversations]
            return [f.result() for f in tqdm(futures, desc=progress or self.model, disable=progress is None)]
