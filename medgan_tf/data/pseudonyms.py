"""Patient pseudonyms: no name, ID, date or UID of a patient leaves the converter.

Records and manifests carry only `patient_key` = HMAC-SHA256(salt, patient_id) truncated to 16 hex
digits. The salt comes from an explicit value (`--salt`), else $MEDGAN_TF_SALT, else a random
per-user secret created once in $XDG_CONFIG_HOME/medgan-tf/pseudonym-salt (mode 600): stable keys
across conversions by one user, not reversible by anyone without that file. The salt itself is
never written to any output.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

METHOD = "HMAC-SHA256(salt, patient_id), first 16 hex digits"


def resolve_salt(explicit: str | None) -> tuple[bytes, str]:
    """(salt bytes, where it came from) — explicit, $MEDGAN_TF_SALT, per-user secret file."""
    if explicit:
        return explicit.encode(), "--salt"
    if os.environ.get("MEDGAN_TF_SALT"):
        return os.environ["MEDGAN_TF_SALT"].encode(), "MEDGAN_TF_SALT"
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = config_home / "medgan-tf" / "pseudonym-salt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode(), "per-user secret file"


def pseudonym(patient_id: str, salt: bytes) -> str:
    """16 hex digits of HMAC-SHA256(salt, patient_id): stable, not reversible without the salt."""
    return hmac.new(salt, patient_id.strip().encode(), hashlib.sha256).hexdigest()[:16]
