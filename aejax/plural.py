"""Counts in the commands' lines: "1 epoch", "2 epochs", "10,000 images"."""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (an ``s`` added), thousands separated.

    >>> count(1, "epoch"), count(2, "epoch"), count(10_000, "image")
    ('1 epoch', '2 epochs', '10,000 images')
    """
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
