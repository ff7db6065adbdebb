"""``facecascade`` command line: thin argparse front end over the library.

Subcommands: ``synth``, ``ingest``, ``predict``, ``evaluate``, ``tune``, ``export``,
``recipe``, ``show-metrics``, ``count-params``. Errors in input print one line naming the
file (and line) and exit with status 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import FORMATS, NET_WIDTHS, Config, ConfigError, load_config

DEFAULT_PARAMS = "params.yaml"


class UsageError(Exception):
    """Bad input named by the user: reported on one line, exit status 2."""


def _cfg(args: argparse.Namespace):
    """The params of ``--params``; without the option and outside a project, the defaults."""
    if args.params is None:
        if not Path(DEFAULT_PARAMS).is_file():
            return Config()
        return load_config(DEFAULT_PARAMS)
    return load_config(args.params)


# ---------------------------------------------------------------------------- commands

def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_synthetic_dataset

    cfg = _cfg(args).synth
    n = args.n if args.n is not None else cfg.n_faces
    seed = args.seed if args.seed is not None else cfg.seed
    size = args.size if args.size is not None else cfg.image_size
    stamp = Path(args.out) / ".synth.json"
    want = {"n": n, "seed": seed, "size": size}
    if stamp.is_file() and json.loads(stamp.read_text()) == want and not args.force:
        print(f"{args.out}: procedural data set up to date ({n} faces, seed {seed})")
        return 0
    list_path = write_synthetic_dataset(args.out, n=n, size=size, seed=seed)
    stamp.write_text(json.dumps(want) + "\n")
    print(f"wrote {n} procedural faces: {list_path}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from .formats import IngestError, assign_split, ingest
    from .io import write_json_atomic, write_parquet_atomic

    cfg = _cfg(args)
    try:
        faces, rejects, summary = ingest(
            args.format, root=args.root, list_path=args.list, boxes_path=args.boxes,
            max_image_pixels=args.max_image_pixels or cfg.data.max_image_pixels,
            strict=args.strict)
    except IngestError as exc:
        raise UsageError(str(exc)) from None
    faces = assign_split(faces, val_fraction=cfg.data.split.val_fraction,
                         seed=cfg.data.split.seed)
    write_parquet_atomic(faces, args.out)
    write_parquet_atomic(rejects, args.rejects)
    if args.summary:
        write_json_atomic(summary, args.summary)
    print(_summary_text(summary))
    return 0


def _summary_text(summary: dict) -> str:
    lines = [f"accepted: {summary.get('accepted', 0)}", f"rejected: {summary.get('rejected', 0)}"]
    for reason, count in sorted(summary.get("rejects_by_reason", {}).items(),
                                key=lambda kv: -kv[1]):
        lines.append(f"  {count:6d}  {reason}")
    return "\n".join(lines)


def _requests(args: argparse.Namespace):
    from .formats import read_list
    from .inference import FaceRequest, collect_images, requests_from_list

    if args.list:
        if args.format == "mtfl" and not args.boxes:
            print("note: mtfl list without --boxes: faces are found by the detector",
                  file=sys.stderr)
        faces, rejects = read_list(args.format, root=args.root, list_path=args.list,
                                   boxes_path=args.boxes)
        for r in rejects.itertuples(index=False):
            print(f"skipped {r.file}:{r.line}: {r.reason}", file=sys.stderr)
        return requests_from_list(faces, args.root), len(rejects)
    if not args.inputs:
        raise UsageError("give images or folders, or --list FILE --format FMT --root DIR")
    return [FaceRequest(path=str(f), file=f) for f in collect_images(args.inputs)], 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import XY_COLUMNS, draw_predictions, predict_requests, write_table
    from .models import load_model

    cfg = _cfg(args)
    requests, skipped = _requests(args)
    cascade = load_model(args.model, cfg=cfg)
    points, problems = predict_requests(cascade, requests, max_pixels=cfg.serve.max_image_pixels,
                                        all_levels=args.all_levels, progress=not args.quiet)
    for p in problems.itertuples(index=False):
        print(f"no prediction for {p.path}: {p.reason}", file=sys.stderr)
    cols = ["path", *(["level"] if args.all_levels else []), *XY_COLUMNS]
    table = points[cols] if args.list else points.drop(columns="request")
    write_table(table, args.out)
    if args.draw:
        for _ in draw_predictions(points, requests, args.draw,
                                  max_pixels=cfg.serve.max_image_pixels):
            pass
    print(f"{len(points)} rows -> {args.out}" + (f"; drawings in {args.draw}" if args.draw else "")
          + (f"; {skipped} list line(s) skipped" if skipped else "")
          + (f"; {len(problems)} image(s) gave no prediction" if len(problems) else ""))
    return 1 if args.strict and (skipped or len(problems)) else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_list

    cfg = _cfg(args)
    report = evaluate_list(args.model, fmt=args.format, root=args.root, list_path=args.list,
                           boxes_path=args.boxes, out_dir=args.out, cfg=cfg)
    from .metrics import format_table

    print(format_table(report))
    print(f"report: {Path(args.out) / 'metrics.json'}, plots in {args.out}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tuning import run_search

    cfg = _cfg(args)
    result, run_id = run_search(cfg, args.crops, args.out, net=args.net,
                                progress=not args.quiet, track=not args.no_mlflow)
    print(result.table())
    best = result.best
    print(f"best: {best.trial_id} val NME {100 * best.best_val_nme:.2f}% with "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in result.best_settings.items()))
    print(f"{len(result.trials)} trials in {result.seconds:.0f} s; {Path(args.out) / 'search.json'}"
          f" (suggested level{result.level}.train), {Path(args.out) / 'curves.png'}"
          + (f"; MLflow run {run_id}" if run_id else " (finished before: not run again)"))
    if args.apply:
        from .recipe import apply_settings

        changed = apply_settings(args.apply, f"level{result.level}.train", result.best_settings)
        print(f"applied to {args.apply}: " + (", ".join(changed) if changed else "no change"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx
    from .models import load_model

    path = export_onnx(load_model(args.model, cfg=_cfg(args)), args.out)
    print(f"exported {path}")
    return 0


def cmd_show_metrics(args: argparse.Namespace) -> int:
    from .metrics import format_table

    try:
        report = json.loads(Path(args.metrics).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{args.metrics}:{exc.lineno}: not a metrics JSON ({exc.msg})") from None
    print(format_table(report["levels"] if "levels" in report else report))
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from .recipe import load_recipe, recipe_overrides

    recipe = load_recipe(args.recipe, base=_cfg(args))
    for item in [*recipe_overrides(recipe), *args.set]:
        if "=" not in item:
            raise UsageError(f"{item!r}: expected KEY=VALUE")
        print("-S")
        print(item)
    return 0


def cmd_count_params(args: argparse.Namespace) -> int:
    from .nets import format_parameter_table

    print(format_parameter_table(local_share=args.local_share, widths=args.widths))
    return 0


# ---------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facecascade", description=__doc__.splitlines()[0])
    p.add_argument("--params", help=f"params file (default: ./{DEFAULT_PARAMS} if present, "
                                    "else the built-in defaults)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the procedural face data set")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--size", type=int)
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("ingest", help="read and validate an annotation list")
    s.add_argument("--format", choices=FORMATS, required=True)
    s.add_argument("--root", required=True)
    s.add_argument("--list", required=True)
    s.add_argument("--boxes")
    s.add_argument("--out", required=True)
    s.add_argument("--rejects", required=True)
    s.add_argument("--summary")
    s.add_argument("--strict", action="store_true", help="any rejected face is an error")
    s.add_argument("--max-image-pixels", type=int)
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("tune", help="Ray Tune search of a level's training settings, on its "
                                    "representative network")
    s.add_argument("--crops", required=True,
                   help="crop directory of the network's level (e.g. outputs/crops/level1)")
    s.add_argument("--net", help="network to search (default: tune.net of the params)")
    s.add_argument("--out", required=True, help="folder for search.json and curves.png")
    s.add_argument("--no-mlflow", action="store_true", help="do not log the search to MLflow")
    s.add_argument("--apply", metavar="FILE",
                   help="write the best settings into FILE's levelN.train section (params.yaml: "
                        "`dvc status` then shows the level's train stage changed)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("predict", help="5 points for the faces in images, folders or a list")
    s.add_argument("inputs", nargs="*", help="image files or folders (faces found by detector)")
    s.add_argument("--list")
    s.add_argument("--format", choices=FORMATS, default="cuhk")
    s.add_argument("--root", default=".")
    s.add_argument("--boxes")
    s.add_argument("--model", required=True,
                   help="cascade directory, exported .onnx file or models:/NAME@ALIAS")
    s.add_argument("--out", required=True, help="output table: .csv, .json or .parquet")
    s.add_argument("--draw", help="folder for annotated copies of the images")
    s.add_argument("--all-levels", action="store_true")
    s.add_argument("--strict", action="store_true",
                   help="exit 1 if any list line was skipped or any image gave no face")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("evaluate", help="per-level NME/FR/AUC table, JSON and plots")
    s.add_argument("--list", required=True)
    s.add_argument("--format", choices=FORMATS, default="cuhk")
    s.add_argument("--root", required=True)
    s.add_argument("--boxes")
    s.add_argument("--model", required=True)
    s.add_argument("--out", default="evaluation")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", help="export the cascade to ONNX")
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("show-metrics", help="print the per-level table of a metrics.json")
    s.add_argument("metrics")
    s.set_defaults(func=cmd_show_metrics)

    s = sub.add_parser("recipe", help="a recipe's params overrides as `dvc exp run` arguments, "
                                      "one per line (-S, then KEY=VALUE)")
    s.add_argument("recipe", help="recipe file, e.g. recipes/real.yaml")
    s.add_argument("set", nargs="*", metavar="KEY=VALUE", help="more overrides, appended")
    s.set_defaults(func=cmd_recipe)

    s = sub.add_parser("count-params", help="parameters of the 23 networks vs the paper")
    s.add_argument("--local-share", action="store_true")
    s.add_argument("--widths", default="paper", choices=list(NET_WIDTHS),
                   help="conv channel plan (levelN.model.widths)")
    s.set_defaults(func=cmd_count_params)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (UsageError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"facecascade {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
