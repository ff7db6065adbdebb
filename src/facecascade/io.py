"""Atomic output writing: a temp file beside the target, then ``os.replace``.

An interrupted stage therefore leaves either the old file or the new one,
never half a file. A directory is replaced by two renames (the old one to
``.NAME.old``, the new one into place); a writer killed between them leaves
``.NAME.old`` and no ``NAME``, and the next writer restores ``.NAME.old``
before anything else (:func:`remove_stale_temps`), so the old output is never lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place when the block succeeds.

    With ``directory=True`` the temporary path is a fresh directory that
    replaces ``path`` (an existing directory there is removed first).
    On error the temporary file or directory is deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)  # as a plain open() would create
    try:
        yield tmp
        if directory:
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                _between_renames()
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


#: the environment variable of the test hook of :func:`_between_renames`
KILL_HOOK_ENV = "FACECASCADE_TEST_KILL_BETWEEN_RENAMES"


def _between_renames() -> None:
    """Test hook: with ``KILL_HOOK_ENV=1`` the process SIGKILLs itself between the two
    renames of a directory swap (tests/test_io.py checks the next writer recovers)."""
    if os.environ.get(KILL_HOOK_ENV) == "1":
        os.kill(os.getpid(), signal.SIGKILL)


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Clean up after a writer of ``path`` that was killed (SIGKILL gives no chance to).

    A ``.NAME.old`` with no ``NAME`` is a directory swap killed between its two renames:
    it is renamed back to ``NAME`` (the old output is restored, not deleted). Then temp
    files/dirs and a ``.NAME.old`` beside a complete ``NAME`` are deleted; returns what
    was removed.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists() and not path.exists():
        os.replace(old, path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) + sorted(
        path.parent.glob(f".{path.name}.old"))
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def load_tensors(path: str | Path, what: str = "weights file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming ``path``.

    Only tensors and plain containers are unpickled: a file that would need to run code
    to load is refused, and the message never suggests loading it with
    ``weights_only=False`` (the advice PyTorch gives, wrong for a file of unknown origin).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is refused (it holds Python objects other than tensors), is not a
        PyTorch file (corrupt, truncated, another format) or cannot be read.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: refused: the {what} holds Python objects other than "
                         "tensors, and loading it could run code; only plain weights are read"
                         ) from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        detail = "" if not first or "weights_only" in first else f" ({first})"
        raise ValueError(f"{path}: not a readable PyTorch {what}: corrupt, truncated or "
                         f"another format{detail}") from None


def plain(obj: Any) -> Any:
    """``obj`` with every tuple a list, recursively through dicts and lists: plain data
    for JSON and YAML (and ``torch.load(weights_only=True)``).

    >>> plain({"a": (1, (2, 3)), "b": [{"c": ()}]})
    {'a': [1, [2, 3]], 'b': [{'c': []}]}
    """
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def write_json_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_parquet_atomic(df: Any, path: str | Path) -> None:
    """Write a pandas DataFrame to Parquet, atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
