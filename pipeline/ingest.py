"""Stage ingest: read the annotation list, validate every face, split train/val by content.

Writes the faces table, the rejects table (file, line, reason) and a JSON summary.
"""

from __future__ import annotations

import json

from facecascade.formats import assign_split, ingest
from facecascade.io import write_json_atomic, write_parquet_atomic
from facecascade.stage import parse_argv, run


def main() -> None:
    cfg, paths = parse_argv(__doc__, ["faces_out", "rejects_out", "summary_out"])
    d = cfg.data
    fmt = "cuhk" if d.format == "synthetic" else d.format  # the generator writes a CUHK list
    faces, rejects, summary = ingest(fmt, root=d.root, list_path=d.list,
                                     boxes_path=d.boxes or None,
                                     max_image_pixels=d.max_image_pixels, strict=d.strict)
    faces = assign_split(faces, val_fraction=d.split.val_fraction, seed=d.split.seed)
    summary["split"] = faces["split"].value_counts().to_dict()
    write_parquet_atomic(faces, paths["faces_out"])
    write_parquet_atomic(rejects, paths["rejects_out"])
    write_json_atomic(summary, paths["summary_out"])
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    run(main)
