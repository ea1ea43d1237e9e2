"""Synthetic clips with a known answer: one coloured square moving over a noisy grey field.

The tiny models learn to name the square's colour and the direction it moves
(``daskcap tiny-models``); the demo and the tests write such clips as real
videos, so a caption can be checked against what the clip shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 190, 50),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "white": (250, 250, 250),
    "black": (8, 8, 8),
}
# Unit steps in image coordinates (x right, y down).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "still"}


@dataclass(frozen=True)
class MovingSquare:
    """A square of ``colour`` whose centre moves ``travel`` (a fraction of the frame's
    side along the motion) in ``direction`` over the clip, on grey noise of mean ``grey``."""

    colour: str
    direction: str
    size: float = 0.5  # side, as a fraction of the frame's shorter side
    start: tuple[float, float] = (0.5, 0.5)  # centre at the first frame, as fractions of width and height
    travel: float = 0.4
    grey: int = 128
    noise: int = 20  # the field's pixels are grey +- noise, new every frame
    seed: int = 0

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {', '.join(COLOURS)}, got {self.colour!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")

    def centre(self, progress: float) -> tuple[float, float]:
        """The square's centre (fractions of width and height) at ``progress`` in [0, 1] of the clip."""
        dx, dy = DIRECTIONS[self.direction]
        return self.start[0] + dx * self.travel * progress, self.start[1] + dy * self.travel * progress

    def render(self, progress: float, width: int, height: int, frame_index: int = 0) -> np.ndarray:
        """The frame at ``progress`` as (height, width, 3) uint8 RGB."""
        rng = np.random.default_rng((self.seed, frame_index))
        field = rng.integers(self.grey - self.noise, self.grey + self.noise + 1, size=(height, width, 1))
        image = np.repeat(np.clip(field, 0, 255), 3, axis=2).astype(np.uint8)
        side = max(2, round(self.size * min(width, height)))
        cx, cy = self.centre(progress)
        x0, y0 = round(cx * width - side / 2), round(cy * height - side / 2)
        image[max(0, y0) : max(0, y0 + side), max(0, x0) : max(0, x0 + side)] = COLOURS[self.colour]
        return image

    def reversed(self) -> MovingSquare:
        """The same clip played backwards."""
        return MovingSquare(self.colour, REVERSED[self.direction], self.size, self.centre(1.0), self.travel, self.grey, self.noise, self.seed)


def random_square(rng: np.random.Generator, colour: str | None = None, direction: str | None = None) -> MovingSquare:
    """A square that stays inside the frame for the whole clip."""
    colour = colour or str(rng.choice(list(COLOURS)))
    direction = direction or str(rng.choice(list(DIRECTIONS)))
    size = float(rng.uniform(0.4, 0.6))
    travel = float(rng.uniform(0.3, 0.45)) if direction != "still" else 0.0
    half = size / 2 * 0.75  # the square may touch the border, not leave the frame
    dx, dy = DIRECTIONS[direction]
    start = []
    for step in (dx, dy):
        low, high = half, 1 - half
        if step > 0:
            high -= travel
        elif step < 0:
            low += travel
        start.append(float(rng.uniform(low, max(low, high))))
    return MovingSquare(colour, direction, size, (start[0], start[1]), travel, int(rng.integers(70, 186)), int(rng.integers(10, 30)), int(rng.integers(1 << 31)))


def write_clip(path: Path, square: MovingSquare, seconds: float = 3.0, fps: int = 30, width: int = 192, height: int = 144) -> Path:
    """The clip as an H.264 mp4 (what a camera or a phone would hand over)."""
    import av

    count = max(2, round(seconds * fps))
    rate = Fraction(fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for index in range(count):
            image = square.render(index / (count - 1), width, height, index)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return Path(path)
