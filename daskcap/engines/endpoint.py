"""The endpoint engine: a model stage's requests sent to an OpenAI-compatible server
(``vllm serve``, NVIDIA NIM, SGLang, a hosted API) instead of a model in the worker.

It runs on CPU workers. Each worker holds one engine per endpoint, whose thread pool
(``EndpointSpec.slots`` threads) is the bound on that worker's requests in flight; the
runner spreads the job-wide bound (``--endpoint-max-concurrency``) over its request
workers. A request is retried on timeouts, lost connections, 429 and 5xx, with
exponential backoff and jitter, waiting at least what ``Retry-After`` asks. A request
that keeps being answered with an error maps to its error text (its window is
``caption_failed`` with the server's message); a server that gives no success at all
for ``breaker_s`` stops the job (``EndpointDown``), and a rerun resumes. The API key is
read from the environment on the worker, by name, and goes nowhere but the
``Authorization`` header.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import CancelledError, ThreadPoolExecutor
from email.utils import parsedate_to_datetime

from daskcap.engines.base import Engine, EngineConfig, EngineUnavailable, Generation, LoadedModel, TextRequest, VideoRequest
from daskcap.engines.chat_api import caption_body, error_message, text_body, to_generation

log = logging.getLogger(__name__)

VIDEO_MODES = ("mp4", "frames")
# Answers worth asking again: the server is busy, overloaded or failing for now.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0
ROLE_NAMES = {"caption": "captioning", "enhance": "enhancement"}


class EndpointDown(EngineUnavailable):
    """The server refused the key or answered nothing for too long: the job stops with this line."""


def api_key(env_name: str) -> str | None:
    """The key from the environment variable ``env_name`` (None when no name is given)."""
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise EndpointDown(f"the endpoint's API key variable {env_name} is not set (or empty) in this process's environment")
    return key


def display_url(url: str) -> str:
    """``url`` without user info or query: what logs and summary.json may show."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an endpoint's base URL, or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// base URL such as http://host:8000/v1, got {url!r}"
    if parts.username or parts.password or parts.query:
        return "must not carry credentials or a query: put the API key in an environment variable and name it with --endpoint-api-key-env"
    return None


class _Http:
    """Keep-alive HTTP(S) connections to one server, one per thread (the stdlib's
    http.client: the same code runs in every venv daskcap's workers use)."""

    def __init__(self, url: str, timeout_s: float):
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.local = threading.local()

    def request(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, http.client.HTTPMessage, bytes]:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            connection = self.local.connection = kind(self.host, self.port, timeout=self.timeout_s)
        try:
            connection.request(method, self.prefix + path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            connection.close()  # a broken or stale connection: the next request opens another
            self.local.connection = None
            raise
        if response.will_close:
            connection.close()
            self.local.connection = None
        return response.status, response.headers, data


def _headers(key: str | None, request_id: str | None = None) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if request_id:
        headers["X-Request-Id"] = request_id  # vLLM and most gateways log it; daskcap's test server counts by it
    return headers


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def backoff_s(tries: int, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with jitter (half fixed, half random), at least ``retry_after``."""
    step = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(tries, 16))
    return max(step / 2 + rng.uniform(0, step / 2), retry_after or 0.0)


def served_models(url: str, key: str | None, timeout_s: float = 30.0) -> list[str]:
    """The model ids the server lists at ``/models``; EndpointDown (one line) when it cannot be
    reached or refuses the key."""
    try:
        status, _, data = _Http(url, timeout_s).request("GET", "/models", None, _headers(key))
    except (OSError, http.client.HTTPException) as exc:
        raise EndpointDown(f"cannot reach the endpoint {display_url(url)} ({type(exc).__name__}: {exc})") from None
    if status in AUTH_STATUSES:
        raise EndpointDown(f"the endpoint {display_url(url)} refused the API key ({error_message(status, data)})")
    if status != 200:
        raise EndpointDown(f"the endpoint {display_url(url)} did not list its models at /models ({error_message(status, data)})")
    try:
        return [entry["id"] for entry in json.loads(data)["data"]]
    except (ValueError, KeyError, TypeError):
        raise EndpointDown(f"the endpoint {display_url(url)} answered /models with something that is not a model list") from None


class _Breaker:
    """Trips when no request of this worker has succeeded for ``seconds`` since the first failure."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.failing_since: float | None = None
        self.lock = threading.Lock()

    def success(self) -> None:
        with self.lock:
            self.failing_since = None

    def failure(self) -> float:
        """Seconds failed so far."""
        with self.lock:
            now = time.monotonic()
            if self.failing_since is None:
                self.failing_since = now
            return now - self.failing_since


class EndpointEngine(Engine):
    """Requests to one OpenAI-compatible server; thread-safe, so tasks share it without a batcher."""

    backend = "endpoint"

    def __init__(self, config: EngineConfig):
        spec = config.endpoint
        super().__init__(config, LoadedModel(display_url(spec.url), "endpoint"))
        self.spec = spec
        self.role = ROLE_NAMES.get(config.role, config.role)
        self.key = api_key(spec.api_key_env)
        self.http = _Http(spec.url, spec.timeout_s)
        self.pool = ThreadPoolExecutor(spec.slots, thread_name_prefix=f"daskcap-{config.role}-endpoint")
        self.breaker = _Breaker(spec.breaker_s)
        self.rng = random.Random()
        self.counts: Counter = Counter()
        self.counts_lock = threading.Lock()
        log.info("endpoint engine: %s at %s (%d requests in flight)", spec.model, display_url(spec.url), spec.slots)

    def caption(self, requests: list[VideoRequest]) -> dict[str, Generation | str]:
        return self._send_all(requests, lambda r: caption_body(r, self.spec))

    def complete(self, requests: list[TextRequest]) -> dict[str, Generation | str]:
        return self._send_all(requests, lambda r: text_body(r, self.spec))

    def drain(self) -> dict[str, int]:
        """The requests, retries and failed requests counted since the last drain."""
        with self.counts_lock:
            counts, self.counts = dict(self.counts), Counter()
        return counts

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _count(self, **amounts: int) -> None:
        with self.counts_lock:
            self.counts.update(amounts)

    def _send_all(self, requests: list, body) -> dict[str, Generation | str]:
        """Every request through this worker's pool; a result (or its error text) per request id."""

        def one(request):
            try:
                encoded = json.dumps(body(request)).encode()
            except (ValueError, TypeError, OSError) as exc:
                return f"the request could not be built: {type(exc).__name__}: {exc}"
            # The role tells a window's caption request from its enhancement in the server's logs.
            return self._post(encoded, f"{self.config.role}:{request.request_id}")

        futures = {request.request_id: self.pool.submit(one, request) for request in requests}
        results = {}
        try:
            for request_id, future in futures.items():
                results[request_id] = future.result()
        except CancelledError:  # the engine was closed under this task: its worker is closing
            raise EndpointDown(f"the {self.role} endpoint engine was closed while requests waited (its worker is closing)") from None
        finally:
            for future in futures.values():
                future.cancel()  # a tripped breaker stops the rest of the task's requests
        return results

    def _post(self, body: bytes, request_id: str) -> Generation | str:
        """One chat completion, retried; a Generation, or the last error's text."""
        spec, answered_failures, tries = self.spec, 0, 0
        while True:
            self._count(requests=1)
            retry_after = None
            try:
                status, headers, data = self.http.request("POST", "/chat/completions", body, _headers(self.key, request_id))
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                # A request the server took too long over counts against it; a server that is not
                # there counts only against the breaker (a restart must not fail the windows).
                answered_failures += isinstance(exc, TimeoutError)
            else:
                if status == 200:
                    try:
                        generation = to_generation(json.loads(data))
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        self._count(failed=1)
                        return f"the endpoint's answer is not a chat completion: {data[:200]!r}"
                    self.breaker.success()
                    return generation
                failure = error_message(status, data)
                if status in AUTH_STATUSES:
                    raise EndpointDown(f"the {self.role} endpoint {display_url(spec.url)} refused the API key ({failure})")
                if status not in RETRY_STATUSES:  # the request itself is refused (too long, malformed): not worth repeating
                    self.breaker.success()  # the server is up and answering
                    self._count(failed=1)
                    return failure
                answered_failures += 1
                retry_after = retry_after_s(headers.get("Retry-After"))
            failed_for = self.breaker.failure()
            if failed_for > spec.breaker_s:
                raise EndpointDown(
                    f"the {self.role} endpoint {display_url(spec.url)} gave no successful answer for {failed_for:.0f} s "
                    f"(last: {failure}); the job stops here: what was written is kept, the same command resumes it"
                )
            if answered_failures > spec.max_retries:
                self._count(failed=1)
                return failure
            delay = backoff_s(tries, retry_after, self.rng)
            tries += 1
            self._count(retries=1)
            log.debug("endpoint request %s failed (%s); retrying in %.1f s", request_id, failure, delay)
            # Waits what Retry-After asks; otherwise no longer than the breaker's time left.
            time.sleep(delay if retry_after else min(delay, max(0.05, spec.breaker_s - failed_for + 0.05)))
