"""Chat prompts shared by the backends (the model's own chat template renders them)."""

from __future__ import annotations

VIDEO_PAD = "<|video_pad|>"


def video_messages(prompt: str) -> list[dict]:
    """One user turn: the video, then the prompt text."""
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]


def text_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def render(tokenizer, messages: list[dict]) -> str:
    """The model's chat template applied, ending with the assistant's turn opened."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer of {tokenizer.name_or_path} has no chat template")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def expand_video_pad(text: str, video_tokens: int) -> str:
    """Replace the template's single video placeholder by one token per visual token."""
    if text.count(VIDEO_PAD) != 1:
        raise ValueError(f"expected one {VIDEO_PAD} in the rendered prompt, found {text.count(VIDEO_PAD)}")
    return text.replace(VIDEO_PAD, VIDEO_PAD * video_tokens)
