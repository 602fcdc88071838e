"""Checksums, downloads and archive extraction that never leave a half-written file behind."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from metagrad.errors import DatasetError

_CHUNK = 1 << 20


def _digest(path: str | Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return _digest(path, "sha256")


def md5_of(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    return _digest(path, "md5")


def download(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and check its checksum; return ``dest``.

    The bytes go to ``<dest>.part`` first and are renamed to ``dest`` only once the checksum
    matches, so ``dest`` either is the complete, verified file or does not exist.
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as out:
            _copy_url(url, out, progress=progress, label=dest.name)
    except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
        part.unlink(missing_ok=True)
        raise DatasetError(
            f"Could not download {url} to {dest}: {exc}. Check the network connection and that "
            f"{dest.parent} is writable, then retry; or download the file by hand and point the "
            "loader at the folder that holds it."
        ) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _verify(part, url, md5=md5, sha256=sha256)
    os.replace(part, dest)
    return dest


def _copy_url(url: str, out: BinaryIO, *, progress: bool, label: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response:
        size = response.headers.get("Content-Length")
        total = int(size) if size else None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=label,
            disable=not progress or total is None,
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def _verify(path: Path, url: str, *, md5: str | None, sha256: str | None) -> None:
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        actual = _digest(path, algorithm)
        if actual != expected.lower():
            path.unlink(missing_ok=True)
            raise DatasetError(
                f"Checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}. "
                "The download is corrupt or the file changed at its source; it was deleted. "
                "Retry the download; if it fails again, fetch the file by hand and verify it."
            )


def extract_zip(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extract ``archive`` into the new folder ``dest_dir``; return ``dest_dir``.

    The members go to a temporary sibling folder that is renamed to ``dest_dir`` only after
    every member was written, so ``dest_dir`` never holds a partial extraction.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if dest_dir.exists():
        raise DatasetError(
            f"Cannot extract {archive} into {dest_dir}: that path exists already. "
            "Delete it to extract again, or use it as it is."
        )
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent)
    )
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        os.replace(staging, dest_dir)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DatasetError(
            f"{archive} is not a valid, complete zip archive ({exc}). "
            "It is probably truncated or corrupt: delete it and download it again."
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest_dir
