"""A small OpenAI-compatible server over daskcap's transformers engine, for tests and benchmarks.

``python -m daskcap.engines.serve --model DIR [--model DIR2] --port N`` serves real model
output (the tiny models in CI, any Qwen2.5-VL / Qwen2 folder elsewhere) the way ``vllm serve``
does, as far as daskcap's endpoint engine uses it: ``GET /v1/models``, ``POST
/v1/chat/completions`` with text, ``image_url`` and ``video_url`` (base64 data URLs) content,
``usage`` and ``finish_reason``, a Bearer key (``--api-key-env NAME``). Requests are batched
through the production ``EngineHost``. It listens on loopback only.

``--test-hooks`` adds ``POST /_test/faults`` (answer matching requests with a status and
``Retry-After``, a delay, or a refusal) so the failure paths can be tried against a real
server; ``--log FILE`` writes one JSON line per answered request; ``--trivial TEXT`` answers
every request with TEXT and no model, to measure the client alone.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from daskcap.engines.base import EngineConfig, Generation, TextRequest, VideoRequest
from daskcap.video.windows import num_sampled_frames, sample_indices

DEFAULT_FPS = 2.0


class BadRequest(ValueError):
    """The request is not one this server can answer (HTTP 400)."""


def _data(url: str, kind: str) -> bytes:
    prefix, _, encoded = url.partition(";base64,")
    if not prefix.startswith(f"data:{kind}/") or not encoded:
        raise BadRequest(f"only base64 data URLs of {kind} are served here, got {url[:40]!r}")
    return base64.b64decode(encoded)


def decode_image(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def decode_video(data: bytes, fps: float) -> np.ndarray:
    """An mp4's frames sampled at ``fps`` over its length (first to last frame), as daskcap samples a window."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        video_fps = float(stream.average_rate or 30)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise BadRequest("the video has no frames")
    count = num_sampled_frames(len(frames), video_fps, fps)
    return np.stack([frames[min(i, len(frames) - 1)] for i in sample_indices(0, len(frames) - 1, count)])


def even(frames: np.ndarray) -> np.ndarray:
    """Qwen-VL takes frames in pairs: an odd count repeats the last one."""
    return frames if len(frames) % 2 == 0 else np.concatenate([frames, frames[-1:]])


def parse_chat(body: dict) -> tuple[str, np.ndarray | None, float]:
    """(prompt text, frames or None, their fps) of a chat request's last user turn."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    content = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"][-1].get("content")
    fps = float((body.get("mm_processor_kwargs") or {}).get("fps") or DEFAULT_FPS)
    if isinstance(content, str):
        return content, None, fps
    texts, images, video = [], [], None
    for part in content or []:
        kind = part.get("type")
        if kind == "text":
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(decode_image(_data(part["image_url"]["url"], "image")))
        elif kind == "video_url":
            video = decode_video(_data(part["video_url"]["url"], "video"), fps)
        else:
            raise BadRequest(f"content of type {kind!r} is not served here")
    if video is not None and images:
        raise BadRequest("send a video or images, not both")
    # A list of images is taken as the window's frames, in order.
    frames = video if video is not None else (np.stack(images) if images else None)
    return "".join(texts), None if frames is None else even(frames), fps


@dataclass
class Fault:
    """Answer requests whose X-Request-Id contains ``match`` (all, when empty), ``times`` times
    (-1: always): after ``delay_s``, with ``status`` (and ``retry_after``), or a refusal."""

    match: str = ""
    times: int = -1
    status: int | None = None
    retry_after: str | None = None
    message: str = "injected by the test server"
    delay_s: float = 0.0
    refuse: bool = False


class ModelServer:
    """The models, the faults and the log behind the HTTP handler."""

    def __init__(self, models: list[str], api_key: str | None, log_path: str | None, trivial: str | None, delay_s: float):
        from daskcap.engines.host import EngineHost
        from daskcap.engines.weights import model_family

        self.api_key, self.trivial, self.delay_s = api_key, trivial, delay_s
        self.configs: dict[str, EngineConfig] = {}
        for model in models:
            role = "enhance" if model_family(Path(model)) == "qwen-text" else "caption"
            self.configs[model] = EngineConfig(model=model, model_dir=str(Path(model).parent), role=role, backend="transformers", batch_size=8)
        if trivial is not None:
            self.configs.setdefault("trivial", EngineConfig(model="trivial", model_dir="", role="caption"))
        self.host = EngineHost()
        for config in self.configs.values():
            if trivial is None:
                self.host.engine(config)  # loaded before the port answers, as vLLM does
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115 (open while serving)

    def fault_for(self, request_id: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.match in request_id and fault.times != 0:
                    fault.times -= fault.times > 0
                    return fault
        return None

    def record(self, request_id: str, status: int, model: str) -> None:
        if self.log is not None:
            with self.lock:
                self.log.write(json.dumps({"t": time.time(), "request_id": request_id, "status": status, "model": model, "pid": os.getpid()}) + "\n")

    def complete(self, body: dict) -> Generation:
        model = body.get("model")
        if model not in self.configs:
            raise KeyError(model)
        max_tokens = int(body.get("max_tokens") or 256)
        if self.trivial is not None:  # the media are not even decoded: the client alone is measured
            time.sleep(self.delay_s)
            return Generation(self.trivial, 1, len(self.trivial.split()), "stop")
        prompt, frames, fps = parse_chat(body)
        config = self.configs[model]
        request_id = uuid.uuid4().hex
        if config.role == "caption":
            if frames is None:
                raise BadRequest(f"{model} is a vision-language model: send a video or images")
            request, call = VideoRequest(request_id, frames, fps, prompt, max_tokens), lambda engine, batch: engine.caption(batch)
        else:
            if frames is not None:
                raise BadRequest(f"{model} is a text model: it takes no images or video")
            request, call = TextRequest(request_id, prompt, max_tokens), lambda engine, batch: engine.complete(batch)
        return self.host.serve(config, call, [request])[request_id]


def completion(model: str, generation: Generation, refusal: str | None = None) -> dict:
    message = {"role": "assistant", "content": None if refusal else generation.text, **({"refusal": refusal} if refusal else {})}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "content_filter" if refusal else generation.finish_reason}],
        "usage": {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.output_tokens,
                  "total_tokens": generation.prompt_tokens + generation.output_tokens},
    }


def handler(server: ModelServer, test_hooks: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers

        def log_message(self, format, *args) -> None:  # noqa: A002 (the stdlib's name)
            pass  # the request log (--log) is the record

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _error(self, status: int, message: str, headers: dict | None = None) -> None:
            self._send(status, {"error": {"message": message, "type": "error", "code": status}}, headers)

        def _authorized(self) -> bool:
            if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            self._error(401, "invalid API key")
            return False

        def _body(self) -> dict:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path == "/health":
                return self._send(200, {})
            if self.path != "/v1/models":
                return self._error(404, f"no route {self.path}")
            if self._authorized():
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "daskcap"} for name in server.configs]})

        def do_POST(self) -> None:  # noqa: N802
            if test_hooks and self.path == "/_test/faults":
                rules = self._body().get("faults", [])
                with server.lock:
                    server.faults = [Fault(**rule) for rule in rules]
                return self._send(200, {"faults": len(rules)})
            body = self._body()
            if self.path != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}")
            if not self._authorized():
                return
            request_id = self.headers.get("X-Request-Id", "")
            model = str(body.get("model"))
            fault = server.fault_for(request_id) if test_hooks else None
            if fault is not None:
                time.sleep(fault.delay_s)
                if fault.status is not None:
                    self._error(fault.status, fault.message, {"Retry-After": fault.retry_after} if fault.retry_after else None)
                    return server.record(request_id, fault.status, model)
            try:
                generation = server.complete(body)
            except KeyError:
                self._error(404, f"the model {model!r} does not exist")
                return server.record(request_id, 404, model)
            except (BadRequest, ValueError, TypeError) as exc:
                self._error(400, str(exc))
                return server.record(request_id, 400, model)
            refusal = "I can't help with that." if fault is not None and fault.refuse else None
            self._send(200, completion(model, generation, refusal))
            server.record(request_id, 200, model)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daskcap.engines.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="a model folder to serve (repeat for several); its path is its served name")
    parser.add_argument("--host", default="127.0.0.1", help="loopback only")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key-env", help="NAME of the environment variable holding the key clients must send")
    parser.add_argument("--log", help="append one JSON line per answered request to this file")
    parser.add_argument("--test-hooks", action="store_true", help="accept POST /_test/faults")
    parser.add_argument("--trivial", metavar="TEXT", help="answer every request with TEXT, no model (serves the model name 'trivial')")
    parser.add_argument("--delay-s", type=float, default=0.0, help="with --trivial: seconds per answer")
    args = parser.parse_args(argv)
    from daskcap.run.job import is_loopback

    if not is_loopback(args.host):
        parser.error(f"--host must be a loopback address (this test server has no TLS and no limits), got {args.host}")
    if not args.model and args.trivial is None:
        parser.error("give --model DIR (or --trivial TEXT)")
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not key:
        parser.error(f"the environment variable {args.api_key_env} is not set")
    server = ModelServer(args.model, key, args.log, args.trivial, args.delay_s)
    httpd = ThreadingHTTPServer((args.host, args.port), handler(server, args.test_hooks))
    httpd.daemon_threads = True
    print(f"serving {', '.join(server.configs)} on http://{args.host}:{args.port}/v1", flush=True)
    httpd.serve_forever()
    return 0


@dataclass
class Served:
    """A server process started by ``start``."""

    process: subprocess.Popen
    url: str  # base URL, http://127.0.0.1:PORT/v1
    port: int

    def set_faults(self, *faults: dict) -> None:
        request = urllib.request.Request(self.url.removesuffix("/v1") + "/_test/faults", data=json.dumps({"faults": list(faults)}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def kill(self) -> None:
        """SIGKILL, as a crashed or evicted server goes."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float, headers: dict | None = None) -> None:
    """Until ``url``'s /models answers (any status: the key may be wrong on purpose)."""
    import urllib.error

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering")
        try:
            urllib.request.urlopen(urllib.request.Request(url + "/models", headers=headers or {}), timeout=5).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


def start(arguments: list[str], port: int, *, env: dict | None = None, python: str = sys.executable, timeout_s: float = 120,
          stderr=None) -> Served:
    """``python -m daskcap.engines.serve --port PORT ARGUMENTS``, once it answers."""
    process = subprocess.Popen([python, "-m", "daskcap.engines.serve", "--port", str(port), *arguments],
                               env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(url, process, timeout_s)
    except BaseException:
        process.kill()
        raise
    return Served(process, url, port)


if __name__ == "__main__":
    sys.exit(main())
