"""Running a trained cascade on photos: model loading, face finding, batching, output tables.

Used by ``facecascade predict`` / ``evaluate`` and by the MLflow pyfunc model.
A model is a cascade artifact directory (``models/cascade``) or an MLflow
model URI (``models:/facecascade@champion``, ``runs:/<id>/cascade``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .cascade import Cascade, load_cascade
from .config import Config

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
XY_COLUMNS = [f"{a}{i}" for i in range(1, 6) for a in ("x", "y")]


def load_model(spec: str | Path, *, cfg: Config | None = None) -> Cascade:
    """Load a cascade from a local artifact directory, an ``.onnx`` file or an MLflow model URI.

    A path ending in ``.onnx`` (written by ``facecascade export``) gives a
    :class:`facecascade.export.OnnxCascade`: same ``predict``/``predict_level``,
    ``cfg`` and ``levels``, nets run by onnxruntime.
    For a URI, the tracking server is ``MLFLOW_TRACKING_URI`` or else
    ``cfg.mlflow.tracking_uri`` (relative SQLite paths against the working directory).
    """
    text = str(spec)
    if text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        from .tracking import configure, download_cascade

        configure(cfg or Config(), project_dir=Path.cwd())
        return load_cascade(download_cascade(text))
    path = Path(text)
    if path.suffix.lower() == ".onnx" and not path.is_dir():
        from .export import load_onnx

        return load_onnx(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model directory (or use a models:/ URI)")
    return load_cascade(path)


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in the given folders."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return files


@dataclass
class FaceRequest:
    """Faces of one image to predict: its path (as reported) and boxes, if known."""

    path: str
    file: Path
    boxes: np.ndarray | None = None  # (k, 4); None -> run the face detector
    lines: list[int] = field(default_factory=list)


@dataclass
class Progress:
    """A minimal progress line on stderr for long runs (no extra dependency)."""

    total: int
    label: str = "faces"
    every_s: float = 1.0
    _done: int = 0
    _t0: float = field(default_factory=time.perf_counter)
    _last: float = 0.0

    def update(self, n: int) -> None:
        self._done += n
        now = time.perf_counter()
        if now - self._last >= self.every_s or self._done >= self.total:
            self._last = now
            rate = self._done / max(now - self._t0, 1e-9)
            width = 30
            filled = int(width * self._done / max(self.total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self._done}/"
                             f"{self.total} {self.label} ({rate:.0f}/s)")
            if self._done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def requests_from_list(faces: pd.DataFrame, root: str | Path) -> list[FaceRequest]:
    """One request per list line (list order kept), boxes from the list where present."""
    from .formats import faces_to_arrays

    _, boxes = faces_to_arrays(faces)
    out = []
    for i, row in enumerate(faces.itertuples(index=False)):
        box = boxes[i:i + 1]
        out.append(FaceRequest(path=row.path, file=Path(root) / row.path,
                               boxes=None if not np.isfinite(box).all() else box,
                               lines=[int(row.line)]))
    return out


def predict_requests(cascade: Cascade, requests: Sequence[FaceRequest], *, max_pixels: int,
                     batch_images: int = 256, all_levels: bool = False,
                     progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict the points of every face of every request.

    Returns ``(points, problems)``: ``points`` has one row per face (request
    order, then detection order) with ``path``, ``face``, ``box_*`` and
    ``x1..y5`` (final level; with ``all_levels`` a ``level`` column and one row
    per level); ``problems`` lists requests that gave no face (``path``,
    ``reason``), never dropped silently.
    """
    from .decoding import decode_ahead
    from .detect import find_faces
    from .images import ImageError

    rows: list[pd.DataFrame] = []
    problems: list[dict] = []
    bar = Progress(len(requests), "images") if progress else None
    # each file decoded once (grey), in a thread running ahead of inference
    decoded = decode_ahead([r.file for r in requests], max_pixels=max_pixels)
    for start in range(0, len(requests), batch_images):
        chunk = requests[start:start + batch_images]
        images, boxes, index, owners = [], [], [], []
        slot: dict[int, int] = {}  # id(image) -> position in images: one copy per file
        for req in chunk:
            img = next(decoded)
            if isinstance(img, ImageError):
                problems.append({"path": req.path, "reason": img.reason})
                continue
            b = req.boxes if req.boxes is not None else find_faces(img, cascade.cfg.detect)
            if len(b) == 0:
                problems.append({"path": req.path, "reason": "no face found by detector"})
                continue
            if id(img) not in slot:
                slot[id(img)] = len(images)
                images.append(img)
            boxes.append(np.asarray(b, dtype=np.float64))
            index.extend([slot[id(img)]] * len(b))
            owners.extend((req.path, k) for k in range(len(b)))
        if images:
            all_boxes = np.concatenate(boxes)
            result = cascade.predict(images, all_boxes, np.asarray(index))
            levels = sorted(result) if all_levels else [max(result)]
            parts = []
            for level in levels:
                df = pd.DataFrame(result[level].reshape(-1, 10), columns=XY_COLUMNS)
                df.insert(0, "path", [o[0] for o in owners])
                df.insert(1, "face", [o[1] for o in owners])
                if all_levels:
                    df.insert(2, "level", level)
                for j, c in enumerate(("box_left", "box_top", "box_right", "box_bottom")):
                    df[c] = all_boxes[:, j]
                df["_face"] = np.arange(len(df))
                parts.append(df)
            chunk_df = pd.concat(parts, ignore_index=True)
            if all_levels:
                chunk_df = chunk_df.sort_values(["_face", "level"], kind="stable")
            rows.append(chunk_df.drop(columns="_face"))
        if bar:
            bar.update(len(chunk))
    points = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["path", "face", *XY_COLUMNS])
    return points.reset_index(drop=True), pd.DataFrame(problems, columns=["path", "reason"])


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as CSV, JSON (records) or Parquet by the file's suffix, atomically."""
    from .io import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".parquet"):
        raise ValueError(f"{path}: output must end in .csv, .json or .parquet")
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False, float_format="%.3f")
        elif suffix == ".json":
            df.to_json(tmp, orient="records", indent=1)
        else:
            df.to_parquet(tmp, index=False)


def drawing_path(out_dir: Path, path: str, source: str | Path, used: set[Path]) -> Path:
    """Where the drawing of image ``path`` goes: always inside ``out_dir``, never the source.

    A relative path without ``..`` keeps its folders (``imgs/a.jpg`` ->
    ``out_dir/imgs/a.png``); an absolute or escaping path keeps only its file name.
    Names already ``used`` get ``-2``, ``-3``, ...; a name that is the source file
    itself (drawing into the image folder) gets ``.points.png``.

    >>> drawing_path(Path("out"), "/data/x/a.jpg", "/data/x/a.jpg", set())
    PosixPath('out/a.png')
    """
    rel = Path(path.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        rel = Path(rel.name or "image")
    target = out_dir / rel.with_suffix(".png")
    source_resolved = Path(source).resolve()
    if target.resolve() == source_resolved:
        target = target.with_suffix(".points.png")
    stem, k = target.with_suffix(""), 2
    while target in used:
        target = Path(f"{stem}-{k}.png")
        k += 1
    used.add(target)
    return target


def draw_predictions(points: pd.DataFrame, requests: Sequence[FaceRequest], out_dir: str | Path,
                     *, max_pixels: int) -> Iterator[Path]:
    """Write a copy of each image with its predicted points drawn; yield the written paths."""
    import cv2

    from .images import load_image
    from .io import atomic_path
    from .report import draw_points

    out_dir = Path(out_dir)
    by_path = {r.path: r for r in requests}
    used: set[Path] = set()
    for path, group in points.groupby("path", sort=False):
        img = load_image(by_path[path].file, max_pixels=max_pixels)
        if "level" in group:
            group = group[group["level"] == group["level"].max()]
        for row in group.itertuples(index=False):
            pts = np.array([[getattr(row, f"x{i}"), getattr(row, f"y{i}")] for i in range(1, 6)])
            img = draw_points(img, pts)
            left, top, right, bottom = (int(round(getattr(row, c))) for c in
                                        ("box_left", "box_top", "box_right", "box_bottom"))
            cv2.rectangle(img, (left, top), (right, bottom), (255, 160, 0),
                          max(1, img.shape[1] // 300))
        target = drawing_path(out_dir, path, by_path[path].file, used)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            ok, buf = cv2.imencode(".png", img)
            tmp.write_bytes(buf.tobytes())
        yield target
