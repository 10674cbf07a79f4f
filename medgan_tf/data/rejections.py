"""Why a pair of the pairs CSV cannot be converted: the exception every step of pair preparation
(`pairs.py`, `context.py`) raises, and the one way a header's modality is quoted in a reason."""

from __future__ import annotations

import re


class PairRejected(Exception):
    """A pair that cannot be converted. `reason`: one line for the manifest, without any path,
    file or folder name; `detail`: the same with such names, for the user's terminal only."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail or reason
        super().__init__(reason)


def modality_code(modality: str) -> str:
    """A modality code as read from a header, if it looks like one (never free text)."""
    return modality if re.fullmatch(r"[A-Z0-9_]{1,16}", modality) else "(not a modality code)"
