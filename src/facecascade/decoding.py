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

import threading
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


class _Ahead:
    """What the feeding thread may submit: entries ahead of the consumer, pixels held
    (decoded and not yet past their last entry) and decodings in flight."""

    def __init__(self, ahead: int, budget: int, workers: int) -> None:
        self.ahead, self.budget, self.workers = ahead, budget, workers
        self.position = 0  # the consumer's entry
        self.pixels = 0
        self.in_flight = 0
        self.stop = False
        self.cond = threading.Condition()

    def may_submit(self, first_use: int) -> bool:
        if first_use <= self.position:
            return True  # the consumer waits for it
        return (first_use <= self.position + self.ahead and self.pixels < self.budget
                and self.in_flight < self.workers)

    def done(self, future: Future) -> None:
        with self.cond:
            self.in_flight -= 1
            if not future.cancelled() and isinstance(future.result(), np.ndarray):
                self.pixels += future.result().size
            self.cond.notify_all()

    def release(self, image: np.ndarray | ImageError) -> None:
        with self.cond:
            if isinstance(image, np.ndarray):
                self.pixels -= image.size
            self.cond.notify_all()


def decode_ahead(files: Sequence[str | Path], *, max_pixels: int, ahead: int = 32,
                 ahead_pixels: int | None = None,
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
    ahead_pixels : int, optional
        And no file needed later is submitted while the decoded images not yet
        released (past their last entry) hold this many pixels (default
        ``max_pixels``): memory stays bounded when ``ahead`` is large, as it is to keep
        decoding while the consumer runs a whole batch.
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
    state = _Ahead(ahead, max_pixels if ahead_pixels is None else ahead_pixels, workers)
    futures: dict[Path, Future] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:

        def feed() -> None:  # submits in list order, as far ahead as the state allows
            for f in distinct:
                with state.cond:
                    state.cond.wait_for(lambda f=f: state.stop or state.may_submit(first_use[f]))
                    if state.stop:
                        return
                    state.in_flight += 1
                    futures[f] = fut = pool.submit(_decode, f, max_pixels)
                    state.cond.notify_all()
                fut.add_done_callback(state.done)

        feeder = threading.Thread(target=feed, name="decode-feeder", daemon=True)
        feeder.start()
        try:
            for i, f in enumerate(files):
                with state.cond:
                    state.position = i
                    state.cond.notify_all()
                    state.cond.wait_for(lambda f=f: f in futures)
                    fut = futures[f]
                image = fut.result()
                yield image
                if last_use[f] == i:
                    with state.cond:
                        del futures[f]
                    state.release(image)
        finally:
            with state.cond:
                state.stop = True
                state.cond.notify_all()
                for fut in futures.values():
                    fut.cancel()
            feeder.join()
