"""The OpenAI chat-completions wire format as daskcap speaks it: a window or a caption as a
request body, an answer as a Generation, an error body as one line (engines/endpoint.py sends them)."""

from __future__ import annotations

import base64
import http.client
import json

import numpy as np

from daskcap.engines.base import REPETITION_PENALTY, TEMPERATURE, TOP_P, EndpointSpec, Generation, TextRequest, VideoRequest


def error_message(status: int, data: bytes) -> str:
    """The server's own words for a failed request: OpenAI's ``{"error": {"message"}}``, vLLM's
    ``{"message"}``, else the body's first line."""
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    message = None
    if isinstance(payload, dict):
        error = payload.get("error")
        message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else payload.get("message") or payload.get("detail")
    if not message:
        message = data.decode("utf-8", "replace").strip().splitlines()[0] if data.strip() else http.client.responses.get(status, "")
    return f"HTTP {status}: {str(message)[:500]}"


def sampling(max_tokens: int) -> dict:
    """daskcap's sampling settings in a chat request (``repetition_penalty`` is vLLM's and
    SGLang's extra field)."""
    return {"temperature": TEMPERATURE, "top_p": TOP_P, "repetition_penalty": REPETITION_PENALTY, "max_tokens": max_tokens, "seed": 0}


def png(frame: np.ndarray) -> bytes:
    """One RGB frame as a lossless PNG (PyAV's encoder; no image library needed)."""
    import av

    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
    codec.options = {"compression_level": "1"}  # 12x faster than the default for the same size, within 1%
    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return b"".join(bytes(packet) for packet in [*codec.encode(picture), *codec.encode(None)])


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def caption_body(request: VideoRequest, spec: EndpointSpec) -> dict:
    """A chat request for one window: the window as the server takes it, then the prompt."""
    if spec.video == "mp4":
        if request.mp4 is None:
            raise ValueError("the window has no mp4 to send (endpoint video mode mp4 needs window mp4s)")
        # The server samples the mp4 itself, at its own rate (Qwen-VL's processors: 2 fps, daskcap's
        # default too). No per-request mm_processor_kwargs: vLLM's server refuses them with 400
        # unless started with --trust-request-mm-kwargs.
        media = [{"type": "video_url", "video_url": {"url": _data_url("video/mp4", request.mp4)}}]
    else:
        media = [{"type": "image_url", "image_url": {"url": _data_url("image/png", png(frame))}} for frame in request.frames]
    content = [*media, {"type": "text", "text": request.prompt}]
    return {"model": spec.model, "messages": [{"role": "user", "content": content}], **sampling(request.max_tokens)}


def text_body(request: TextRequest, spec: EndpointSpec) -> dict:
    return {"model": spec.model, "messages": [{"role": "user", "content": request.prompt}], **sampling(request.max_tokens)}


def to_generation(payload: dict) -> Generation:
    """A chat completion as a Generation: its text, ``usage`` and ``finish_reason``; a refusal
    or a content filter is finish reason ``content_filter`` (the caption checks flag it)."""
    choice = payload["choices"][0]
    message = choice.get("message") or {}
    text = (message.get("content") or "").strip()
    finish = choice.get("finish_reason")
    refusal = message.get("refusal")
    if refusal:
        text, finish = text or str(refusal).strip(), "content_filter"
    usage = payload.get("usage") or {}
    return Generation(
        text=text,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=finish if finish in ("length", "content_filter") else "stop",
    )
