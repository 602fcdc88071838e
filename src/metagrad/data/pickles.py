"""Reading the pickled arrays that several dataset releases come in, Python 2 ones included."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from metagrad.errors import DatasetError


def unpickle(data: bytes, where: str, fix: str) -> Any:
    """The object pickled in ``data``.

    ``encoding="latin1"`` reads Python 2 pickles, NumPy arrays included (NumPy's advice); their
    byte strings come back as ``str`` and :func:`as_bytes` turns them back. Python 3 pickles
    are unaffected. Only load pickles from a source you trust: unpickling can run code.
    """
    try:
        return pickle.load(io.BytesIO(data), encoding="latin1")
    except Exception as exc:  # a damaged pickle can raise almost anything
        raise DatasetError(
            f"Cannot unpickle {where}: {exc!r}. The file is corrupt or not a pickle: {fix}."
        ) from exc


def load_pickle(path: Path, fix: str) -> Any:
    """The object pickled in the file ``path`` (see :func:`unpickle`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}. To fix: {fix}.") from exc
    return unpickle(data, str(path), fix)


def as_text(value: Any) -> Any:
    """Byte-string keys and names as ``str``; anything else unchanged."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def text_keys(mapping: Any, where: str, fix: str) -> dict[Any, Any]:
    """A pickled dict with ``str`` keys, whether it was written with ``str`` or ``bytes`` keys."""
    if not isinstance(mapping, dict):
        raise DatasetError(
            f"{where} holds a {type(mapping).__name__}, expected a dict. It is not the expected "
            f"file: {fix}."
        )
    return {as_text(key): value for key, value in mapping.items()}


def as_bytes(value: Any) -> bytes | None:
    """An encoded file stored as ``bytes``, as a Python 2 string (read as latin1) or as a 1-D
    uint8 array; ``None`` for anything else."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin1")
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1:
        return value.tobytes()
    return None


def describe(value: Any) -> str:
    """What a pickled value is, for error messages: an array's shape and dtype, else its type."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {list(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"
