"""Version pins: exact image tags, and the Ray client pinned in requirements.txt."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"
_EXACT_TAG = re.compile(r"^v?(?P<version>\d+\.\d+\.\d+)([-.+_][\w.-]+)?$")


def pinned_version(image: str) -> Optional[str]:
    """The exact X.Y.Z version in an image's tag, or None if it has none."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return None
    match = _EXACT_TAG.match(tag)
    return match.group("version") if match else None


def require_pinned(image: str) -> str:
    if pinned_version(image) is None:
        raise ValueError(
            f"image {image!r} must be pinned to an exact version tag "
            "(like rayproject/ray:2.60.0-py311), never latest or a bare name"
        )
    return image


def pinned_ray_client() -> str:
    """The Ray client version pinned in requirements.txt (the single source)."""
    match = re.search(r"^ray(\[[\w,]+\])?==(\S+)$", REQUIREMENTS.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"{REQUIREMENTS} must pin ray with ==")
    return match.group(2)
