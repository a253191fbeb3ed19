"""The one file-system layer: every file sslx writes or reads in a workdir goes
through here, so a `gs://` (or any other TensorFlow file system) workdir gets its
files where it says, never into a local folder named `gs:`.

Built on `tf.io.gfile`, which TensorFlow's summary writer uses too, so metrics,
TensorBoard events, the saved config and embeddings share one notion of a path.
Orbax writes the checkpoints through its own layer (local, `gs://`, `s3://`).
"""

from __future__ import annotations

import io
import json
import posixpath
from typing import IO, Any

import numpy as np
import tensorflow as tf

from sslx.errors import SslxError


def join(*parts: str) -> str:
    """Joins path parts with '/', which every supported file system accepts."""
    return posixpath.join(*parts)


def scheme(path: str) -> str:
    """'gs', 'ram', 's3', ... for a URL-like path; '' for a local one."""
    head, sep, _ = path.partition("://")
    return head if sep and "/" not in head else ""


def exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def makedirs(path: str) -> None:
    """Creates `path` and its parents; `SslxError` naming the path if that fails."""
    try:
        tf.io.gfile.makedirs(path)
    except tf.errors.OpError as error:
        raise SslxError(f"cannot create directory {path}: {error.message}; check --workdir "
                        "(permissions, bucket name, credentials)") from None


def open_file(path: str, mode: str = "r") -> IO[Any]:
    """A file object for `path` in `mode` ('r', 'w', 'a', with 'b' for bytes)."""
    return tf.io.gfile.GFile(path, mode)


def write(path: str, data: str | bytes) -> None:
    """Writes text or bytes to `path`, replacing what was there."""
    with open_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def read_text(path: str) -> str:
    with open_file(path, "r") as f:
        return f.read()


def write_json(path: str, value: Any) -> None:
    write(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


def save_npy(path: str, array: np.ndarray) -> None:
    """`np.save` to any file system (np.save itself writes local files only)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    write(path, buffer.getvalue())


def load_npy(path: str) -> np.ndarray:
    with open_file(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()
