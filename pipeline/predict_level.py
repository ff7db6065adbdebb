"""Stage predict@L: run level L of the cascade on every face (train and val).

Level L's windows are placed around the previous level's predictions (PREV);
the result feeds level L+1's crops and the evaluation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from facecascade.cascade import cascade_from_weight_files
from facecascade.predictions import predict_faces, read_predictions, write_predictions
from facecascade.stage import parse_argv, run


def main() -> None:
    cfg, paths = parse_argv(__doc__, ["level", "faces", "prev", "models_dir", "out"])
    level = int(paths["level"])
    faces = pd.read_parquet(paths["faces"])
    prev = None if level == 1 else read_predictions(paths["prev"], faces)
    models = Path(paths["models_dir"])
    cascade = cascade_from_weight_files(
        cfg, [models / f"level{k}" for k in range(1, level + 1)], levels=level)
    points = predict_faces(cascade, faces, cfg.data.root, level=level, prev_points=prev,
                           max_pixels=cfg.data.max_image_pixels)
    write_predictions(faces["face_id"].to_numpy(), points, level, paths["out"])
    print(f"level {level}: predicted {len(faces)} faces -> {paths['out']}")


if __name__ == "__main__":
    run(main)
