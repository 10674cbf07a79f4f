"""Why a pair of the pairs CSV cannot be converted: the exception every step of pair preparation
(`pairs.py`, `context.py`) raises, the one way a header's modality is quoted in a reason, and the
one way a volume of a pair (source, target, source_2, …) is read."""

from __future__ import annotations

from typing import Any


class PairRejected(Exception):
    """A pair that cannot be converted. `reason`: one line for the manifest, without any path,
    file or folder name; `detail`: the same with such names, for the user's terminal only."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail or reason
        super().__init__(reason)


def read_pair_volume(side: str, path: str, modality: str) -> Any:
    """The Volume at `path` for the pair's `side` (source, target, source_2, …); PairRejected
    naming the side when the path is empty, unreadable, of another modality than `modality` (a
    key of `medgan_tf.modalities`), or when its values cannot be that modality (its check)."""
    from medgan_tf import modalities
    from medgan_tf.data.io import VolumeReadError, read_volume
    from medgan_tf.errors import UserError

    if not path:
        raise PairRejected(f"{side}: empty path")
    expected = modalities.get(modality)
    try:
        volume = read_volume(path, modality_hint=modality)
    except VolumeReadError as error:
        raise PairRejected(f"{side}: {error.reason}", f"{side}: {error.detail}") from None
    if not expected.accepts(volume.modality):
        raise PairRejected(f"{side}: modality {modalities.shown_code(volume.modality)}; the conversion expects {modality}")
    try:
        expected.plausible(volume.array, side)
    except UserError as error:
        raise PairRejected(str(error)) from None
    return volume
