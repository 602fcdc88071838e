"""Where datasets are looked for: ``root``, else ``$METAGRAD_DATA``, else ``~/.cache/metagrad``."""

from __future__ import annotations

import os
from pathlib import Path


def _base(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("METAGRAD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metagrad"


def search_folders(root: str | Path | None, subfolder: str) -> list[Path]:
    """The base folder itself and its per-dataset ``subfolder``, in that order."""
    base = _base(root)
    return [base, base / subfolder]


def download_folder(root: str | Path | None, subfolder: str) -> Path:
    """Where downloads go: an explicit ``root`` itself, else the shared folder's subfolder."""
    return _base(root) if root is not None else _base(None) / subfolder
