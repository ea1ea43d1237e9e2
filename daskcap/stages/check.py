"""CaptionCheckStage: flag every caption for the ways VLM captions go wrong.

Runs on the CPU side after the model stages (with the writer, on the same
partition, so a clip's windows are together) and needs no model. Each window
gets ``caption_flags`` (and ``enhance_flags`` for its enhanced caption): a list
of flag names, empty when the text looks clean, null when there is no text to
check. A flag never changes a window's ``status``: a flagged caption is still a
caption, and an analyst drops what they want with one ``WHERE``.

Each rule is one small function below; thresholds live on the stage (and in
``daskcap run --check-*`` flags). README "Caption checks" lists them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import median

import pandas as pd

from daskcap.stages._params import Checks

EMPTY = "empty"
TRUNCATED = "truncated"
REPETITIVE = "repetitive"
REFUSAL = "refusal"
DUPLICATE = "duplicate"
TOO_SHORT = "too_short"
NOT_ENGLISH = "not_english"
INVALID_TEXT = "invalid_text"
FLAGS = (EMPTY, TRUNCATED, REPETITIVE, REFUSAL, DUPLICATE, TOO_SHORT, NOT_ENGLISH, INVALID_TEXT)

# (text column, finish-reason column, flags column) per checked caption.
CHECKED = (("caption", "caption_finish_reason", "caption_flags"), ("enhanced_caption", "enhance_finish_reason", "enhance_flags"))


@dataclass(frozen=True)
class CaptionCheckStage:
    """Thresholds of the caption checks (daskcap's own stage; the reference has none).

    ``repetition_ngram`` and ``repetition_share``: a text is ``repetitive`` when
    the word n-grams that occur more than once cover at least this share of its
    words. ``min_words``: fewer words is ``too_short``, and so is fewer than
    ``short_ratio`` times the median of the clip's other windows.
    ``duplicate_similarity``: two windows of a clip whose word-pair sets overlap
    at least this much (Jaccard) are both ``duplicate``. ``check_language``:
    flag ``not_english`` unless the prompt asks for another language.
    """

    repetition_ngram: int = 3
    repetition_share: float = 0.4
    min_words: int = 3
    short_ratio: float = 0.25
    duplicate_similarity: float = 0.9
    check_language: bool = True

    def __post_init__(self) -> None:
        checks = Checks("CaptionCheckStage")
        checks.number("repetition_ngram", self.repetition_ngram, 1, 16, integer=True)
        checks.number("repetition_share", self.repetition_share, above=0.0, high=1.0)
        checks.number("min_words", self.min_words, 0, integer=True)
        checks.number("short_ratio", self.short_ratio, 0.0, 1.0)
        checks.number("duplicate_similarity", self.duplicate_similarity, above=0.0, high=1.0)
        if not isinstance(self.check_language, bool):
            checks.fail(f"check_language must be true or false, got {self.check_language!r}")
        checks.done()


# --- text helpers ---------------------------------------------------------------------

# Punctuation becomes a space (an apostrophe stays inside its word): a translate and a
# split are 2.5x faster than a word regex, and the checks run on every caption.
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation.replace("'", "") + "“”„«»‘‚–—…·•¡¿", " "))


def words(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped (text in scripts without spaces is one word per run)."""
    return [word.strip("'’") for word in text.lower().translate(_PUNCTUATION).split() if word.strip("'’")]


# --- rules on one text ------------------------------------------------------------------


def is_empty(text: str) -> bool:
    return not text.strip()


def is_truncated(finish_reason: str | None) -> bool:
    """The engine stopped at the output-token limit, not at the end of the answer."""
    return finish_reason == "length"


def repeated_share(tokens: Sequence[str], n: int) -> float:
    """The share of ``tokens`` covered by n-grams that occur more than once."""
    if len(tokens) < 2 * n:
        return 0.0
    grams = list(zip(*(tokens[i:] for i in range(n))))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0.0  # no n-gram repeats: the common case, decided without marking positions
    covered = bytearray(len(tokens))
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = b"\x01" * n
    return sum(covered) / len(tokens)


def is_repetitive(tokens: Sequence[str], n: int = 3, share: float = 0.4) -> bool:
    """A loop ("the car drives the car drives ..."): repeated n-grams cover ``share`` of the words."""
    return repeated_share(tokens, n) >= share


_REFUSAL = re.compile(
    r"\b(?:i['’]?m sorry|i am sorry|i apologi[sz]e|sorry, (?:but )?i|i (?:can ?not|can['’]t|am unable to|['’]m unable to|"
    r"am not able to|do not have the ability|don['’]t have the ability)|as an ai\b|as a language model|"
    r"unable to (?:view|see|watch|access|process|analy[sz]e|describe) (?:the |this |videos?|images?)|"
    r"no video (?:was |is )?(?:provided|attached)|(?:the|this) (?:video|clip) (?:shows|is|depicts|contains) (?:a |the )?"
    r"(?:video|clip|scene)\W*$|^\W*(?:this|it) is a (?:video|clip)\W*$)"
)


def is_refusal(text: str) -> bool:
    """A refusal or boilerplate instead of a description ("I'm sorry, I can't ...", "The video shows a video")."""
    return _REFUSAL.search(text.lower()) is not None


# The replacement character (bytes that were not UTF-8), C0/C1 control characters
# other than tab and newlines, lone surrogates, and noncharacters.
_INVALID = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def has_invalid_text(text: str) -> bool:
    return _INVALID.search(text) is not None


_ENGLISH = frozenset(
    "a an the and or but of to in on at by for with from into onto over under is are was were be been being it its "
    "this that these those there then than as while he she they them his her their we you i not no".split()
)
# Common function words of other languages written in Latin script, none of them English words.
_FOREIGN = frozenset(
    "le la les des une du et est sont dans sur avec pour qui que ce cette ces il elle ils au aux "  # French
    "el los las un una y es en con por para del al se lo su sus está están "  # Spanish
    "der das ein eine und ist sind mit auf für von zu dem im nicht sich "  # German
    "il gli della delle di da nel nella con sono è uno "  # Italian
    "os um uma é são com para na no da dos das "  # Portuguese
    "het een en van op zijn niet "  # Dutch
    "i och är att det på med som "  # Swedish
    "jest się nie że".split()  # Polish
) - _ENGLISH
_LANGUAGES = (
    "chinese|mandarin|cantonese|japanese|korean|french|german|spanish|italian|portuguese|russian|arabic|hindi|"
    "bengali|urdu|turkish|vietnamese|thai|indonesian|malay|dutch|swedish|norwegian|danish|finnish|polish|czech|"
    "greek|hebrew|persian|farsi|ukrainian|romanian|hungarian|tamil|telugu|swahili"
)
_OTHER_LANGUAGE = re.compile(rf"\b(?:in|into|using|to)\s+(?:the\s+)?(?:{_LANGUAGES})\b|\b(?:{_LANGUAGES})\s+(?:caption|description|text|language|only)\b")


def asks_for_other_language(prompt: str | None) -> bool:
    """Whether a prompt asks for an answer in a language other than English (or is not English itself)."""
    if not prompt:
        return False
    return _OTHER_LANGUAGE.search(prompt.lower()) is not None or _non_latin_share(prompt) > 0.5


def _non_latin_share(text: str) -> float:
    """The share of letters outside a-z (accented Latin letters count as outside: a
    French or German text stays well under the 0.3 that flags a script)."""
    if text.isascii():
        return 0.0
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 4:
        return 0.0
    return sum(not ("a" <= c <= "z" or "A" <= c <= "Z") for c in letters) / len(letters)


def is_not_english(text: str, tokens: Sequence[str]) -> bool:
    """Mostly letters outside the Latin alphabet, or more foreign function words than English ones.

    Cheap and conservative: too little text (under 4 letters, or under 4 words for
    the function-word test) is never flagged, nor is terse English with no
    function words ("Red car, highway, sunset").
    """
    if _non_latin_share(text) > 0.3:
        return True
    if len(tokens) < 4:
        return False
    foreign = sum(map(_FOREIGN.__contains__, tokens))
    return foreign >= 2 and foreign > sum(map(_ENGLISH.__contains__, tokens))


def text_flags(text: str, finish_reason: str | None, params: CaptionCheckStage, english_expected: bool) -> tuple[list[str], list[str]]:
    """The flags one text gets on its own, and its words (for the clip-level rules)."""
    flags = []
    if is_empty(text):
        flags.append(EMPTY)
    if is_truncated(finish_reason):
        flags.append(TRUNCATED)
    tokens = words(text)
    if is_repetitive(tokens, params.repetition_ngram, params.repetition_share):
        flags.append(REPETITIVE)
    if is_refusal(text) or finish_reason == "content_filter":  # a server's refusal or content filter (engines/endpoint.py)
        flags.append(REFUSAL)
    if english_expected and params.check_language and is_not_english(text, tokens):
        flags.append(NOT_ENGLISH)
    if has_invalid_text(text):
        flags.append(INVALID_TEXT)
    return flags, tokens


# --- rules across a clip's windows -------------------------------------------------------


def _pairs(tokens: Sequence[str]) -> frozenset:
    return frozenset(zip(tokens, tokens[1:])) if len(tokens) > 1 else frozenset(tokens)


def duplicates(texts: Sequence[Sequence[str]], similarity: float = 0.9) -> set[int]:
    """Positions of the texts (as words) identical or near-identical to another one.

    Near: the Jaccard overlap of their word-pair sets is at least ``similarity``.
    Empty texts are left out (they are ``empty``).
    """
    found: set[int] = set()
    first: dict[tuple, int] = {}
    for i, tokens in enumerate(texts):
        if not tokens:
            continue
        key = tuple(tokens)
        if key in first:
            found.update((first[key], i))
        else:
            first[key] = i
    if similarity >= 1.0:
        return found
    shingles = {i: _pairs(texts[i]) for i in first.values()}
    positions = sorted(shingles)
    for a_index, a in enumerate(positions):
        for b in positions[a_index + 1 :]:
            sa, sb = shingles[a], shingles[b]
            union = len(sa | sb)
            if union and len(sa & sb) / union >= similarity:
                found.update((a, b))
    # Every window identical to a flagged one is flagged with it.
    return {i for i, tokens in enumerate(texts) if tokens and first.get(tuple(tokens)) in found} | found


def too_short(lengths: Sequence[int], min_words: int = 3, ratio: float = 0.25) -> set[int]:
    """Positions whose word count is under ``min_words``, or under ``ratio`` times the
    median of the clip's other windows. Empty texts are left out (they are ``empty``)."""
    short = set()
    for i, length in enumerate(lengths):
        if length == 0:
            continue
        others = [n for j, n in enumerate(lengths) if j != i and n > 0]
        if length < min_words or (others and length < ratio * median(others)):
            short.add(i)
    return short


# --- the stage ---------------------------------------------------------------------------


def _column_flags(texts: list, reasons: list, clips: list, english: list[bool], params: CaptionCheckStage) -> list:
    """Flags for one caption column of a partition: per text, then across each clip's windows."""
    flags: list = [None] * len(texts)
    tokens: list = [None] * len(texts)
    for i, text in enumerate(texts):
        if isinstance(text, str):
            flags[i], tokens[i] = text_flags(text, reasons[i], params, english[i])
    by_clip: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        if tokens[i] is not None:
            by_clip.setdefault(clip, []).append(i)
    for members in by_clip.values():
        group = [tokens[i] for i in members]
        for position in sorted(duplicates(group, params.duplicate_similarity) if len(members) > 1 else ()):
            flags[members[position]].append(DUPLICATE)
        for position in sorted(too_short([len(t) for t in group], params.min_words, params.short_ratio)):
            flags[members[position]].append(TOO_SHORT)
    return [sorted(f, key=FLAGS.index) if f is not None else None for f in flags]


def check_windows(windows: pd.DataFrame, params: CaptionCheckStage, enhance_prompt: str | None = None) -> pd.DataFrame:
    """``windows`` with ``caption_flags`` and ``enhance_flags`` filled in.

    A clip's windows must be in the same frame (a partition holds whole clips).
    ``enhance_prompt``: the enhancement prompt, when it asks for another language
    the enhanced captions are not language-checked.
    """
    windows = windows.copy()
    clips = list(windows["clip_id"])
    prompts = list(windows["prompt"]) if "prompt" in windows else [None] * len(windows)
    caption_english = [not asks_for_other_language(p) for p in prompts]
    enhance_english = [e and not asks_for_other_language(enhance_prompt) for e in caption_english]
    for (text, reason, column), english in zip(CHECKED, (caption_english, enhance_english), strict=True):
        flags = _column_flags(list(windows[text]), list(windows[reason]), clips, english, params)
        windows[column] = pd.Series(flags, index=windows.index, dtype=object)
    return windows


def count_flags(flag_lists: Iterable) -> dict:
    """Per flag, how many windows carry it (every flag listed, zeros too), and how
    many windows were checked and flagged at all."""
    counts = dict.fromkeys(FLAGS, 0)
    checked = flagged = 0
    for flags in flag_lists:
        if flags is None or (isinstance(flags, float) and flags != flags):  # null: nothing to check
            continue
        checked += 1
        flagged += len(flags) > 0
        for flag in flags:
            counts[flag] = counts.get(flag, 0) + 1
    return {"checked": checked, "flagged": flagged, "by_flag": counts}


def flag_counts(windows: pd.DataFrame) -> dict:
    """summary.json's ``caption_flags`` and ``enhance_flags``: counts per flag."""
    return {column: count_flags(windows[column]) for _, _, column in CHECKED if column in windows}
