"""Word error rate: what the agent understood against what the caller said."""

from __future__ import annotations

import re

__all__ = ["normalize", "wer", "word_errors"]

_NUM = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
        "7": "seven", "8": "eight", "9": "nine", "10": "ten"}  # fmt: skip


def normalize(text: str) -> list[str]:
    """Lower case, punctuation removed (apostrophes inside words kept), single digits spelt."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    words = [w.strip("'") for w in text.split()]
    return [_NUM.get(w, w) for w in words if w]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference length) after :func:`normalize`."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (Levenshtein distance over words / reference words).

    Can exceed 1 with many insertions; an empty reference gives 0 for an empty
    hypothesis and 1 otherwise.

    Examples
    --------
    >>> wer("Will we ever forget it?", "will we never forget it")
    0.2
    """
    e, n = word_errors(reference, hypothesis)
    if n == 0:
        return 0.0 if e == 0 else 1.0
    return e / n
