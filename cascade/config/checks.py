"""The check every config section's `validate` uses: `check(ok, key, value, reason)` raises `Invalid`,
which `cascade.config.loading` turns into a one-line ConfigError naming the file and the dotted key."""

from __future__ import annotations

from typing import Any


class Invalid(Exception):
    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason


def check(ok: bool, key: str, value: Any, reason: str) -> None:
    if not ok:
        raise Invalid(key, value, reason)


def positive(obj: Any, *keys: str) -> None:
    for key in keys:
        check(getattr(obj, key) > 0, key, getattr(obj, key), "must be > 0")
