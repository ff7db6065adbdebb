"""Crops: the input windows of every network, cut, resized, grey, standardised.

One function decides where a network looks (:func:`net_windows`); training
crops (with augmentation and shake) and inference crops both go through it, so
train and predict can never disagree.

Training crops are written as one Parquet table per network and split
(``{net}.train.parquet``, ``{net}.val.parquet``) in row groups, so a reader can
stream them. Columns (see ``docs/ARCHITECTURE.md``): ``face_id``, ``aug_id``,
``pixels`` (uint8, H*W), ``target`` (float32, 2k relative coordinates),
``win_wh`` (float32, 2) and ``iod`` (float32).

Level 1 (F1, EN1, NM1) is augmented per face: the plain crop, a mirror,
rotations (``level1.augment.rotations`` and ``small_rotations``, about the
frame centre), frame scalings, four frame translations and ``copies`` random
box jitters (a box of another detector's style, see :mod:`facecascade.frame`).
Levels 2 and 3 cut windows around the *previous level's predictions* for each
face (aug 0, unshaken) plus ``shakes`` windows shifted by the shake
``N(0, shake_sigma^2)`` (in frame units) -- so the next level learns to correct
real errors of the level before it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import geometry as geo
from .config import Config
from .frame import (
    BoxStyle,
    convert_style,
    face_frame,
    jitter_boxes,
    measure_style,
    points_frame,
)
from .specs import NetSpec, get_spec, level_nets

log = logging.getLogger(__name__)

ROW_GROUP_SIZE = 8192
#: floor of a crop's std in :func:`standardise`, in grey levels (flat crops map to zeros)
MIN_STD = 1e-3 * 255


def patch_frames(frames: np.ndarray, prev_points: np.ndarray, cfg: Config) -> np.ndarray:
    """The frames ``(n, 4)`` that size levels 2 and 3's windows and shake.

    With ``frame.patches: box`` (the papers) the faces' box frames ``frames`` as they
    are; with ``points``, frames sized from the previous level's points ``(n, 5, 2)``
    (:func:`facecascade.frame.points_frame`), the same whatever box the detector drew.
    """
    if cfg.frame.patches == "box":
        return np.asarray(frames, dtype=np.float64)
    return points_frame(prev_points, cfg.frame.points_scale, frames)


def refined_faces(level: int, frames: np.ndarray, cfg: Config) -> np.ndarray:
    """Which faces level 2 or 3 refines: those whose narrowest window of the level is at
    least ``crops.min_window_px`` pixels wide in the image (``frames``: :func:`patch_frames`).

    A smaller window holds fewer pixels than the net's input: the patch is an upsampled
    blur, and the level adds noise rather than detail. Those faces keep the previous
    level's points. Every face is refined when ``min_window_px`` is 0 (the papers).

    >>> from facecascade.config import config_from_dict
    >>> cfg = config_from_dict({"level3": {"crops": {"windows": [0.08, 0.09],
    ...                                              "min_window_px": 8}}})
    >>> refined_faces(3, np.array([[0, 0, 40.0, 40], [0, 0, 60, 60]]), cfg).tolist()
    [False, True]
    """
    section = cfg.level(level).crops
    frames = np.asarray(frames, np.float64)
    return 2.0 * min(section.windows) * (frames[:, 2] - frames[:, 0]) >= section.min_window_px


def net_windows(spec: NetSpec, frames: np.ndarray, cfg: Config,
                prev_points: np.ndarray | None = None) -> np.ndarray:
    """Input windows ``(n, 4)`` of network ``spec`` for faces with the given frames.

    Level 1: a region of the frame (``full``, ``top`` or ``bottom``, the last two
    of heights ``level1.top_fraction`` / ``bottom_fraction``). Levels 2/3: a
    window centred on the previous estimate of the net's point, of half-size
    ``windows[pair_index]`` times the frame (paper eq. 5); for these, ``frames``
    are the :func:`patch_frames`.
    """
    if spec.level == 1:
        top, bottom = cfg.level1.crops.top_fraction, cfg.level1.crops.bottom_fraction
        fractions = {"full": (0.0, 0.0, 1.0, 1.0), "top": (0.0, 0.0, 1.0, top),
                     "bottom": (0.0, 1.0 - bottom, 1.0, 1.0)}[spec.region]
        return geo.sub_box(frames, fractions)
    if prev_points is None:
        raise ValueError(f"{spec.name} is a level-{spec.level} net: it needs the previous "
                         "level's points (prev_points)")
    a = cfg.level(spec.level).crops.windows[spec.pair_index]
    return geo.windows_around(prev_points[:, spec.points[0]], frames, (a, a))


def cut(image_gray: np.ndarray, matrices: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Warp one grey image through each ``(2, 3)`` map into ``(m, H, W)`` uint8 crops.

    Pixels outside the image repeat the border (boxes often run past the edge).
    """
    w, h = out_size
    out = np.empty((len(matrices), h, w), dtype=np.uint8)
    for i, m in enumerate(matrices):
        out[i] = cv2.warpAffine(image_gray, m.astype(np.float64), (w, h),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def standardise(pixels: np.ndarray, size: tuple[int, int], *,
                min_std: float = MIN_STD) -> np.ndarray:
    """Per-crop standardisation: minus the crop's mean, divided by its std.

    Parameters
    ----------
    pixels : ndarray
        Grey crops, ``(b, H*W)`` row-major or ``(b, H, W)``, usually uint8.
    size : (int, int)
        Crop ``(width, height)``.
    min_std : float
        Floor of the std (in grey levels), so flat crops map to zeros, not NaN.

    Returns
    -------
    ndarray
        float32 ``(b, 1, H, W)``.

    Examples
    --------
    >>> x = standardise(np.array([[0, 255, 0, 255]], dtype=np.uint8), (2, 2))
    >>> x.shape, x.ravel().tolist()
    ((1, 1, 2, 2), [-1.0, 1.0, -1.0, 1.0])
    """
    w, h = size
    pixels = np.asarray(pixels)
    if pixels.ndim not in (2, 3) or pixels.shape[1:] not in ((h * w,), (h, w)):
        raise ValueError(f"pixels of shape {pixels.shape} do not hold crops of width {w} and "
                         f"height {h}: expected (b, {h * w}) or (b, {h}, {w})")
    x = pixels.reshape(len(pixels), 1, h, w).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.maximum(std, np.float32(min_std))


# ---------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class Augmented:
    """Augmented copies of one face: image maps, boxes and points after the map."""

    transforms: np.ndarray  # (m, 2, 3) image -> augmented image
    boxes: np.ndarray       # (m, 4) detector boxes in the augmented image
    points: np.ndarray      # (m, 5, 2) ground truth in the augmented image


def level1_augment(points: np.ndarray, box: np.ndarray, width: int, cfg: Config,
                   rng: np.random.Generator, *, train: bool,
                   style: BoxStyle | None = None) -> Augmented:
    """The level-1 augmentations of one face (only the plain copy when ``train`` is False).

    Order of ``aug_id``: 0 plain, then mirror, rotations, small rotations,
    scalings, the four translations, then the random jittered copies. A share
    ``square_fraction`` of the jittered copies first redraw the box from the
    training boxes' ``style`` into ``square_style`` (another detector's convention),
    so one model serves both box styles.
    """
    aug = cfg.level1.crops.augment
    points = np.asarray(points, dtype=np.float64)[None]
    box = np.asarray(box, dtype=np.float64)[None]
    side = np.sqrt(np.prod(geo.box_size(box)))
    center = geo.box_center(box)
    ident = geo.similarity(center, 0.0)
    transforms, boxes, pts = [ident], [box], [points]

    def add(m: np.ndarray, b: np.ndarray, mirrored: bool = False) -> None:
        p = geo.apply_affine(m, points)
        if mirrored:
            p = p[:, geo.MIRROR_PERMUTATION]
        transforms.append(m)
        boxes.append(b)
        pts.append(p)

    if train:
        if aug.mirror:
            add(geo.mirror_matrix(width), geo.mirror_boxes(box, width), mirrored=True)
        for angle in (*aug.rotations, *aug.small_rotations):
            add(geo.similarity(center, angle), box)
        for s in aug.scales:
            add(ident, geo.boxes_from_center(center, geo.box_size(box) * s))
        dx, dy = aug.translations
        for sx, sy in ((dx, 0.0), (-dx, 0.0), (0.0, dy), (0.0, -dy)):
            if sx or sy:  # a zero translation would only repeat the plain crop
                add(ident, box + np.array([sx, sy, sx, sy]) * side)
        square = BoxStyle(**dataclasses.asdict(aug.square_style))
        for _ in range(aug.copies):
            base = box
            redraw = style is not None and aug.square_fraction > 0
            if redraw and rng.random() < aug.square_fraction:
                base = convert_style(box, style, square)
            jb = jitter_boxes(base, rng, scale_sigma=aug.jitter_scale,
                              aspect_sigma=aug.jitter_aspect, shift_sigma=aug.jitter_shift)
            if rng.random() < 0.5 and aug.mirror:
                add(geo.mirror_matrix(width), geo.mirror_boxes(jb, width), mirrored=True)
            else:
                add(geo.similarity(center, rng.normal(0.0, aug.jitter_rotation)), jb)
    return Augmented(np.concatenate(transforms), np.concatenate(boxes), np.concatenate(pts))


# ---------------------------------------------------------------------------- samples

@dataclass
class Samples:
    """Crops of one network for a batch of faces, as stored in a crop table."""

    face_id: np.ndarray   # (m,) int64
    aug_id: np.ndarray    # (m,) int32
    pixels: np.ndarray    # (m, H*W) uint8
    target: np.ndarray    # (m, 2k) float32
    win_wh: np.ndarray    # (m, 2) float32
    iod: np.ndarray       # (m,) float32


def _samples(spec: NetSpec, gray: np.ndarray, transforms: np.ndarray, windows: np.ndarray,
             points: np.ndarray, face_id: int, aug_ids: np.ndarray) -> Samples:
    size = spec.input_size
    crop_maps = geo.compose(geo.window_to_output(windows, size), transforms)
    pixels = cut(gray, crop_maps, size).reshape(len(windows), -1)
    rel = geo.to_rel(points[:, list(spec.points)], windows)
    return Samples(
        face_id=np.full(len(windows), face_id, dtype=np.int64),
        aug_id=aug_ids.astype(np.int32),
        pixels=pixels,
        target=rel.reshape(len(windows), -1).astype(np.float32),
        win_wh=geo.box_size(windows).astype(np.float32),
        iod=geo.inter_ocular(points).astype(np.float32),
    )


def face_samples(level: int, gray: np.ndarray, points: np.ndarray, box: np.ndarray,
                 face_id: int, cfg: Config, rng: np.random.Generator, *, train: bool,
                 prev_points: np.ndarray | None = None,
                 style: BoxStyle | None = None) -> dict[str, Samples]:
    """Training (or validation) crops of every network of ``level`` for one face.

    ``points`` (5, 2) is the ground truth, ``box`` (4,) the detector box and
    ``prev_points`` (5, 2) the previous level's prediction (levels 2 and 3).
    ``style`` is the training boxes' convention (level 1, see :func:`level1_augment`).
    """
    names = level_nets(level)
    out: dict[str, Samples] = {}
    if level == 1:
        aug = level1_augment(points, box, gray.shape[1], cfg, rng, train=train, style=style)
        frames = face_frame(aug.boxes, cfg.frame.scale)
        ids = np.arange(len(frames))
        for name in names:
            spec = get_spec(name)
            windows = net_windows(spec, frames, cfg)
            out[name] = _samples(spec, gray, aug.transforms, windows, aug.points, face_id, ids)
        return out
    if prev_points is None:
        raise ValueError(f"level {level} crops need the level-{level - 1} predictions")
    section = cfg.level(level).crops
    n_win = 1 + (section.shakes if train else 0)
    frames = np.repeat(face_frame(np.asarray(box, dtype=np.float64)[None], cfg.frame.scale),
                       n_win, axis=0)
    prev = np.repeat(np.asarray(prev_points, dtype=np.float64)[None], n_win, axis=0)
    frames = patch_frames(frames, prev, cfg)
    pts = np.repeat(np.asarray(points, dtype=np.float64)[None], n_win, axis=0)
    ident = np.repeat(geo.similarity(np.zeros((1, 2)), 0.0), n_win, axis=0)
    ids = np.arange(n_win)
    for name in names:
        spec = get_spec(name)
        windows = net_windows(spec, frames, cfg, prev)
        if n_win > 1:
            windows[1:] = geo.shake(windows[1:], frames[1:], section.shake_sigma, rng)
        out[name] = _samples(spec, gray, ident, windows, pts, face_id, ids)
    return out


# ---------------------------------------------------------------------------- tables

def crop_schema(spec: NetSpec) -> pa.Schema:
    """Arrow schema of the crop table of network ``spec``."""
    w, h = spec.input_size
    return pa.schema([
        ("face_id", pa.int64()),
        ("aug_id", pa.int32()),
        ("pixels", pa.list_(pa.uint8(), w * h)),
        ("target", pa.list_(pa.float32(), 2 * len(spec.points))),
        ("win_wh", pa.list_(pa.float32(), 2)),
        ("iod", pa.float32()),
    ])


def _fixed_list(values: np.ndarray, width: int, dtype: pa.DataType) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, width)


def samples_to_table(spec: NetSpec, parts: Sequence[Samples]) -> pa.Table:
    """Concatenate samples of one network into an Arrow table of its crop schema."""
    schema = crop_schema(spec)
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in Samples.__dataclass_fields__}
    w, h = spec.input_size
    return pa.Table.from_arrays([
        pa.array(cat["face_id"], pa.int64()),
        pa.array(cat["aug_id"], pa.int32()),
        _fixed_list(cat["pixels"], w * h, pa.uint8()),
        _fixed_list(cat["target"], 2 * len(spec.points), pa.float32()),
        _fixed_list(cat["win_wh"], 2, pa.float32()),
        pa.array(cat["iod"], pa.float32()),
    ], schema=schema)


def read_crop_table(path: str | Path) -> dict[str, np.ndarray]:
    """Load a whole crop table as numpy columns (``pixels`` (m, H*W), ``target`` (m, 2k), ...).

    A file that is not a crop table (not Parquet, truncated, other columns or types) gets
    a one-line ValueError naming it; a missing one a FileNotFoundError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: crop table not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{path}: not a readable crop table (Parquet): {first}") from None
    want = {"face_id": pa.types.is_integer, "aug_id": pa.types.is_integer,
            "pixels": pa.types.is_fixed_size_list, "target": pa.types.is_fixed_size_list,
            "win_wh": pa.types.is_fixed_size_list, "iod": pa.types.is_floating}
    for name, is_type in want.items():
        if name not in table.column_names:
            raise ValueError(f"{path}: not a crop table: no column {name!r} "
                             f"(has {table.column_names[:8]})")
        if not is_type(table.schema.field(name).type):
            raise ValueError(f"{path}: not a crop table: column {name!r} is "
                             f"{table.schema.field(name).type}")
    return table_to_columns(table)


def table_to_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """Numpy columns of a crop table (fixed-size lists become 2-D arrays)."""
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(
                len(col), col.type.list_size)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def iter_face_images(faces: pd.DataFrame, root: str | Path, *, max_pixels: int,
                     ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row position, grey image)`` for each face, decoding each image file once."""
    from .images import load_gray

    root = Path(root)
    cache_path, cache_img = None, None
    order = np.argsort(faces["path"].to_numpy(), kind="stable")
    for pos in order:
        path = faces["path"].iloc[pos]
        if path != cache_path:
            cache_img = load_gray(root / path, max_pixels=max_pixels)
            cache_path = path
        yield int(pos), cache_img


def write_level_crops(level: int, faces: pd.DataFrame, root: str | Path, out_dir: str | Path,
                      cfg: Config, *, prev_points: np.ndarray | None = None,
                      progress_every: int = 1000) -> dict[str, dict[str, int]]:
    """Write the crop tables of every network of ``level`` for the train and val faces.

    ``faces`` is the annotation table (with its ``split`` column); ``prev_points``
    (n, 5, 2), aligned with ``faces`` rows, holds the previous level's
    predictions (required for levels 2 and 3). Tables are written to temp files
    in row groups and renamed into place at the end. Returns row counts per net
    and split.
    """
    from .formats import faces_to_arrays
    from .io import atomic_path

    points, boxes = faces_to_arrays(faces)
    if level > 1 and (prev_points is None or len(prev_points) != len(faces)):
        raise ValueError(f"level {level} crops need prev_points of shape ({len(faces)}, 5, 2)")
    names = level_nets(level)
    splits = ("train", "val")
    counts = {n: dict.fromkeys(splits, 0) for n in names}
    rng = np.random.default_rng([cfg.resources.seed, level])
    is_train = (faces["split"] == "train").to_numpy()
    style = measure_style(points[is_train], boxes[is_train]) if is_train.any() else None
    if level == 1 and style is not None:
        log.info("training boxes' style: %s", style)
    with (atomic_path(out_dir, directory=True) as tmp_dir,
          _TableSet(names, splits, tmp_dir) as tables):
        for done, (pos, gray) in enumerate(iter_face_images(
                faces, root, max_pixels=cfg.data.max_image_pixels), start=1):
            split = faces["split"].iloc[pos]
            if split not in splits:
                continue
            prev = None if prev_points is None else prev_points[pos]
            per_net = face_samples(level, gray, points[pos], boxes[pos],
                                   int(faces["face_id"].iloc[pos]), cfg, rng,
                                   train=(split == "train"), prev_points=prev, style=style)
            for name, s in per_net.items():
                tables.add(name, split, s)
                counts[name][split] += len(s.face_id)
            if done % progress_every == 0:
                log.info("level %d crops: %d/%d faces", level, done, len(faces))
    return counts


class _TableSet:
    """One buffered ParquetWriter per (net, split), flushed in row groups."""

    def __init__(self, names: Sequence[str], splits: Sequence[str], out_dir: Path):
        self._paths = {(n, s): out_dir / f"{n}.{s}.parquet" for n in names for s in splits}
        self._buffers: dict[tuple[str, str], list[Samples]] = {k: [] for k in self._paths}
        self._rows = dict.fromkeys(self._paths, 0)
        self._writers: dict[tuple[str, str], pq.ParquetWriter] = {}

    def __enter__(self) -> _TableSet:
        for key, path in self._paths.items():
            self._writers[key] = pq.ParquetWriter(path, crop_schema(get_spec(key[0])))
        return self

    def add(self, name: str, split: str, samples: Samples) -> None:
        key = (name, split)
        self._buffers[key].append(samples)
        self._rows[key] += len(samples.face_id)
        if self._rows[key] >= ROW_GROUP_SIZE:
            self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        if self._buffers[key]:
            spec = get_spec(key[0])
            self._writers[key].write_table(samples_to_table(spec, self._buffers[key]),
                                           row_group_size=ROW_GROUP_SIZE)
        self._buffers[key] = []
        self._rows[key] = 0

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            for key in self._writers:
                self._flush(key)
        for writer in self._writers.values():
            writer.close()
        return False
