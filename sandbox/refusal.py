"""Refused: a gateway rule says no. Each half raises its own kind, with its gateway's code."""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def unknown(self) -> bool:
        """Refused because there is no such trade, rather than because of its state."""
        return False


class NoSuchTrade(Refused):
    """Neither half holds what the buyer or the inspection asked for."""

    def __init__(self, what: str) -> None:
        super().__init__("NOT_FOUND", f"the sandbox holds no {what}")

    @property
    def unknown(self) -> bool:
        return True
