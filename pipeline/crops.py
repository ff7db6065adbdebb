"""Stage crops@L: cut the crop tables of every network of level L.

Level 1 crops come from the faces' boxes with augmentation; level 2 and 3 crops
are cut around the previous level's predictions (PREV), with shake.
"""

from __future__ import annotations

import json

import pandas as pd

from facecascade.crops import write_level_crops
from facecascade.predictions import read_predictions
from facecascade.stage import parse_argv, run


def main() -> None:
    cfg, paths = parse_argv(__doc__, ["level", "faces", "prev", "out_dir"])
    level = int(paths["level"])
    faces = pd.read_parquet(paths["faces"])
    prev = None if level == 1 else read_predictions(paths["prev"], faces)
    counts = write_level_crops(level, faces, cfg.data.root, paths["out_dir"], cfg,
                               prev_points=prev)
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    run(main)
