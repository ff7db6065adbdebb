"""Where the benchmarks find a data set, and how their results name it.

A data set is a folder holding ``images/`` and its annotation lists (MTFL's
``trainImageList.txt``...). Scripts take it from ``--data DIR`` or, without the
option, from the environment variable ``FACECASCADE_DATA``. Results record the data
set and a model by *name* (the folder's name and the list's), never by a path of
the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

DATA_ENV = "FACECASCADE_DATA"


def add_data_argument(ap: argparse.ArgumentParser) -> None:
    """``--data DIR``: required unless ``FACECASCADE_DATA`` is set."""
    default = os.environ.get(DATA_ENV) or None
    ap.add_argument("--data", default=default, required=default is None,
                    help=f"data set folder (images/ and lists); default: ${DATA_ENV}")


def dataset_name(data: str | Path, list_name: str) -> str:
    """``mtfl-train/trainImageList.txt``: the data set folder's name and the list's.

    >>> dataset_name("/data/sets/mtfl-train/", "trainImageList.txt")
    'mtfl-train/trainImageList.txt'
    """
    return f"{Path(data).resolve().name}/{Path(list_name).name}"


def model_name(model: str | Path) -> str:
    """A model as results name it: an MLflow URI as is, a directory or file by its name.

    >>> model_name("/data/facecascade-mtfl-cascade"), model_name("models:/facecascade@champion")
    ('facecascade-mtfl-cascade', 'models:/facecascade@champion')
    """
    text = str(model)
    return text if ":/" in text else Path(text).name


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine(load_at_start: float | None) -> dict[str, object]:
    """The machine a result was measured on, and whether it was idle: the load average at
    the start and at the end (a load near the core count means other work shared it).

    >>> sorted(machine(0.0))
    ['cpus', 'load_avg_1min_at_end', 'load_avg_1min_at_start', 'note', 'platform', 'processor']
    """
    end, cpus = load_average(), os.cpu_count() or 1
    loads = [v for v in (load_at_start, end) if v is not None]
    note = ("load unknown" if not loads else
            "idle when started" if (load_at_start or 0.0) < 0.5 else
            f"shared: load {load_at_start} at the start on {cpus} cores")
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": cpus,
            "load_avg_1min_at_start": load_at_start, "load_avg_1min_at_end": end, "note": note}
