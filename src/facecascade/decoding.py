"""Decoding images ahead of inference: each file once, in a background thread.

A face list names the same photo once per face; :func:`decode_ahead` decodes
each distinct file once (keeping it until its last use), in list order, in
worker threads that run ahead of the consumer, so JPEG decoding overlaps
inference (OpenCV releases the GIL while it decodes). Images come back grey
(:func:`facecascade.images.load_gray`, a JPEG decoded to its luma alone): the
cascade and the face detector both work on grey images.

Examples
--------
>>> import tempfile, cv2
>>> d = Path(tempfile.mkdtemp())
>>> _ = cv2.imwrite(str(d / "a.png"), np.full((4, 6, 3), 200, np.uint8))
>>> out = list(decode_ahead([d / "a.png", d / "missing.png", d / "a.png"], max_pixels=100))
>>> out[0].shape, out[1].reason, out[2] is out[0]
((4, 6), 'image missing', True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .images import ImageError, load_gray


def _decode(path: Path, max_pixels: int) -> np.ndarray | ImageError:
    try:
        return load_gray(path, max_pixels=max_pixels)
    except ImageError as exc:
        return exc


def decode_ahead(files: Sequence[str | Path], *, max_pixels: int, ahead: int = 32,
                 workers: int = 1) -> Iterator[np.ndarray | ImageError]:
    """The grey image (or the :class:`ImageError`) of each entry of ``files``, in order.

    Parameters
    ----------
    files : sequence of paths
        Entries may repeat; each distinct file is decoded once and the same array
        is yielded for each of its entries.
    max_pixels : int
        Refuse images whose header claims more pixels (see :func:`load_image`).
    ahead : int
        Files first needed within this many entries of the current one are decoded
        (or decoding) already.
    workers : int
        Decoding threads (0: decode in the calling thread, nothing ahead).
    """
    files = [Path(f) for f in files]
    last_use = {f: i for i, f in enumerate(files)}
    distinct = list(dict.fromkeys(files))
    if workers <= 0:
        cache: dict[Path, np.ndarray | ImageError] = {}
        for i, f in enumerate(files):
            if f not in cache:
                cache[f] = _decode(f, max_pixels)
            yield cache[f]
            if last_use[f] == i:
                del cache[f]
        return
    first_use = {f: i for i, f in reversed(list(enumerate(files)))}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        futures: dict[Path, Future] = {}
        next_file = 0
        try:
            for i, f in enumerate(files):
                # submit every file first needed within the next `ahead` entries
                while next_file < len(distinct) and first_use[distinct[next_file]] <= i + ahead:
                    futures[distinct[next_file]] = pool.submit(_decode, distinct[next_file],
                                                               max_pixels)
                    next_file += 1
                yield futures[f].result()
                if last_use[f] == i:
                    del futures[f]
        finally:
            for fut in futures.values():
                fut.cancel()
