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
