"""Caption checks throughput: captions per second on one core, against a floor.

    python benchmarks/checks.py [--captions 100000] [--out benchmarks/results/<date>-checks.json]

The captions are a realistic mix (mostly clean English prose of 40-160 words,
as Qwen2.5-VL writes at 512 tokens, plus the failure kinds the checks look for),
in clips of 1-6 windows. The floor is the least any per-caption check does:
lower-case the text and split it into words. Both run in this process, on one
core, in the same run; the ratio is what the checks cost over that floor.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import save  # noqa: E402 (benchmarks/, the script's own folder)

from daskcap import schema  # noqa: E402
from daskcap.stages.check import CaptionCheckStage, check_windows, count_flags  # noqa: E402

# Vocabulary large enough that, as in real captions, a phrase rarely comes back word for word.
ADJECTIVES = ("red blue green grey white black small large old young tall narrow wide quiet busy wet dry bright dark "
              "distant crowded empty wooden metal yellow silver brown orange rusty shiny muddy sunny foggy").split()
NOUNS = ("car man woman dog cyclist bus truck child tree building street road bridge river train crowd bird boat "
         "shop window door table chair lamp sign fence field hill cloud umbrella bag phone camera kite horse "
         "tractor van bicycle scooter crane tower").split()
VERBS = ("moves along|turns toward|crosses|stops beside|walks past|waits near|speeds down|climbs onto|circles|"
         "follows|passes behind|leans against|drifts over|rolls across|points at|carries|lifts|pushes|pulls|watches").split("|")
PREPOSITIONS = "near|beside|behind|in front of|under|above|across from|next to|far from|around".split("|")
CONNECTORS = ("while|as|and then|before|after|just as|meanwhile,|at the same time|later|soon").split("|")


def _phrase(rng: random.Random) -> str:
    return f"{rng.choice(('a', 'the', 'one', 'another'))} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


def _prose(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        sentence = f"{_phrase(rng)} {rng.choice(VERBS)} {_phrase(rng)} {rng.choice(PREPOSITIONS)} {_phrase(rng)}"
        if rng.random() < 0.5:
            sentence += f" {rng.choice(CONNECTORS)} {_phrase(rng)} {rng.choice(VERBS)} {_phrase(rng)}"
        out.append(sentence[0].upper() + sentence[1:] + ".")
    return " ".join(out)


def captions(count: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(clip_id, caption, finish_reason): about 85% clean prose, the rest failures of each kind."""
    rng = random.Random(seed)
    rows, clip = [], 0
    while len(rows) < count:
        clip += 1
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.85:
                text, reason = _prose(rng, rng.randint(3, 10)), "stop"
            elif kind < 0.90:
                text, reason = _prose(rng, 18), "length"
            elif kind < 0.93:
                text, reason = " ".join([_prose(rng, 1)] * rng.randint(3, 12)), "length"
            elif kind < 0.95:
                text, reason = "I'm sorry, but I can't help with that.", "stop"
            elif kind < 0.97:
                text, reason = "Une voiture rouge roule lentement sur la route mouillée pendant la nuit.", "stop"
            elif kind < 0.98:
                text, reason = "", "stop"
            else:
                text, reason = "A car.", "stop"
            rows.append((f"clip-{clip}", text, reason))
    return rows[:count]


def _frame(rows):
    return schema.frame_from_rows(
        [
            {"clip_id": clip, "window_index": i, "caption": text, "caption_finish_reason": reason, "status": "ok", "prompt": "Describe this video."}
            for i, (clip, text, reason) in enumerate(rows)
        ],
        schema.WINDOW_SCHEMA,
    )


def measure(count: int, partition: int = 2000, repeats: int = 3) -> dict:
    rows = captions(count)
    frames = [_frame(rows[i : i + partition]) for i in range(0, len(rows), partition)]
    params = CaptionCheckStage()

    def floor() -> None:
        for frame in frames:
            for text in frame["caption"]:
                text.lower().split()

    def checks() -> dict:
        flags = []
        for frame in frames:
            flags.extend(check_windows(frame, params)["caption_flags"])
        return count_flags(flags)

    timings = {}
    for name, function in (("floor", floor), ("checks", checks)):
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            result = function()
            best = min(best, time.process_time() - started)
        timings[name] = best
        if name == "checks":
            counts = result
    words = sum(len(text.split()) for _, text, _ in rows)
    return {
        "captions": count,
        "mean_words": round(words / count, 1),
        "partition_rows": partition,
        "floor_captions_per_cpu_s": round(count / timings["floor"]),
        "checks_captions_per_cpu_s": round(count / timings["checks"]),
        "checks_over_floor": round(timings["checks"] / timings["floor"], 1),
        "flags": counts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    figures = measure(args.captions)
    record = {"date": datetime.date.today().isoformat(), "machine": {"cpu_cores": os.cpu_count(), "python": platform.python_version()}, **figures}
    print(f"caption checks, one core, {figures['captions']} captions of {figures['mean_words']} words on average")
    print(f"  floor (lower + split): {figures['floor_captions_per_cpu_s']:>10,} captions/s")
    print(f"  every check:           {figures['checks_captions_per_cpu_s']:>10,} captions/s  ({figures['checks_over_floor']}x the floor's time)")
    print("  flags: " + ", ".join(f"{n} {flag}" for flag, n in figures["flags"]["by_flag"].items()))
    save(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
