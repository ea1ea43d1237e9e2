"""Progress on the client's terminal: videos listed and probed, windows written (off with --quiet)."""

from __future__ import annotations

import sys


class Progress:
    """One bar per count that grows as the job learns its size: ``grow`` adds to a
    bar's total, ``step`` to its done."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict = {}

    def announce(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def grow(self, name: str, total: int) -> None:
        if not self.enabled:
            return
        if name not in self.bars:
            from tqdm.auto import tqdm

            self.bars[name] = tqdm(total=0, desc=f"{name:>10}", unit="", position=len(self.bars), leave=True, dynamic_ncols=True)
        self.bars[name].total += total
        self.bars[name].refresh()

    def step(self, name: str, n: int = 1) -> None:
        if self.enabled and name in self.bars:
            self.bars[name].update(n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
