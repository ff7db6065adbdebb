"""dvc.yaml lists, for each stage, exactly the code it runs and every params section it reads.

Both are derived here from the code, never written by hand:

- **code**: starting from the stage's entry point (``pipeline/X.py``), the modules of
  ``src/facecascade`` it imports, directly or not: module-level imports, and the imports
  inside every function the stage can reach (a function is reachable when reachable code
  names it: a call, or a reference such as a Ray training loop handed to a trainer). Imports
  inside ``except`` blocks are left out: they run only when the stage fails, and a failed
  stage writes no output (``stage.run`` ends the MLflow run FAILED).
- **params**: in that reachable code, every attribute chain on the config (``cfg`` and
  ``config`` unless annotated as another type, ``X.cfg``, and names assigned from them):
  ``cfg.data.root`` reads ``data.root``, ``cfg.level(k).crops`` reads ``level{k}.crops``,
  and a config handed whole to something outside the package (``cfg.to_dict()``,
  ``dataclasses.asdict``) reads all of it. Not counted: ``tracking.py`` and the ``mlflow``
  section, which only name the MLflow runs and store a stage logs to (run identity, not an
  input of its outputs).

A stage must list every module of its closure and every section it reads, and no module
outside its closure, so that editing a module reruns exactly the stages that import it.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from functools import cache
from pathlib import Path

import pytest
import yaml

from facecascade.config import Config

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "facecascade"
#: modules whose config reads only name MLflow runs (see the module docstring): the runs
#: themselves, and the lineage hashes that identify them
IDENTITY_MODULES = {"tracking", "lineage"}
IDENTITY_SECTIONS = {"mlflow"}
CONFIG_NAMES = {"cfg", "config"}


# ---------------------------------------------------------------------------- the code

@dataclasses.dataclass
class Module:
    name: str
    tree: ast.Module
    top_imports: set[str]
    defs: dict[str, list[ast.AST]]  # function, method or class name -> nodes


def _imported(node: ast.AST) -> set[str]:
    """facecascade modules named by one import statement."""
    out: set[str] = set()
    if isinstance(node, ast.ImportFrom):
        if node.level == 1:
            base = node.module or ""
        elif (node.module or "").startswith("facecascade"):
            base = node.module[len("facecascade"):].lstrip(".")
        else:
            return out
        out |= {base.split(".")[0]} if base else {a.name for a in node.names}
    elif isinstance(node, ast.Import):
        out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("facecascade.")}
    return {m for m in out if (PKG / f"{m}.py").is_file()}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


@cache
def module(name: str, path: Path | None = None) -> Module:
    path = path or PKG / f"{name}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set()
    for node in tree.body:
        if not _is_type_checking(node):
            top |= _imported(node)
    defs: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs.setdefault(node.name, []).append(node)
    return Module(name, tree, top, defs)


def _walk(node: ast.AST, *, skip_defs: bool):
    """Nodes under ``node``, not entering ``except`` blocks (nor nested defs if asked)."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        n = todo.pop()
        if isinstance(n, ast.ExceptHandler) or _is_type_checking(n):
            continue
        if skip_defs and isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
            todo.extend(n.decorator_list)
            continue
        yield n
        todo.extend(ast.iter_child_nodes(n))


def _names(nodes) -> set[str]:
    out = set()
    for n in nodes:
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
    return out


@cache
def reachable(entry: str) -> tuple[frozenset[str], tuple[tuple[str, ast.AST, bool], ...]]:
    """``(modules of src/facecascade the entry point imports, reachable code blocks)``."""
    entry_mod = module("__entry__", ROOT / "pipeline" / entry)
    modules = {"__entry__": entry_mod}
    blocks: list[tuple[str, ast.AST, bool]] = []
    seen_blocks: set[int] = set()
    names: set[str] = set()
    todo: list[tuple[str, ast.AST, bool]] = [("__entry__", entry_mod.tree, True)]

    def add_module(m: str) -> None:
        if m not in modules:
            modules[m] = module(m)
            todo.append((m, modules[m].tree, True))

    while todo:
        mod, node, top_level = todo.pop()
        if id(node) in seen_blocks:
            continue
        seen_blocks.add(id(node))
        # a module's or class's own code, without its functions' bodies (reached by name)
        top_level = top_level or isinstance(node, ast.ClassDef)
        blocks.append((mod, node, top_level))
        inner = list(_walk(node, skip_defs=top_level))
        for n in inner:
            for m in _imported(n):
                add_module(m)
        new = _names(inner) - names
        names |= new
        # a name reached now may define code in any module loaded so far (or later)
        changed = True
        while changed:
            changed = False
            for m, info in list(modules.items()):
                for name in names & set(info.defs):
                    for d in info.defs[name]:
                        if id(d) not in seen_blocks:
                            todo.append((m, d, False))
                            changed = True
                        if isinstance(d, ast.ClassDef):  # implicit dunder calls
                            for sub in d.body:
                                if isinstance(sub, ast.FunctionDef) and \
                                        sub.name.startswith("__") and id(sub) not in seen_blocks:
                                    todo.append((m, sub, False))
            if changed:
                break
    closure = frozenset(m for m in modules if m != "__entry__")
    return closure, tuple(blocks)


# ---------------------------------------------------------------------------- the params

def _field_type(tp: typing.Any, name: str) -> typing.Any | None:
    if not dataclasses.is_dataclass(tp):
        return None
    hints = typing.get_type_hints(tp)
    return hints.get(name)


def _config_chain(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """Dotted config key of an expression (``""`` = the whole config), or None."""
    parts: list[str] = []
    n = node
    while True:
        if isinstance(n, ast.Name):
            base = aliases.get(n.id)
            if base is None:
                return None
            break
        if isinstance(n, ast.Attribute):
            if n.attr == "cfg":  # self.cfg, cascade.cfg: a cascade's config
                base = ""
                break
            parts.append(n.attr)
            n = n.value
            continue
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and \
                n.func.attr in ("level", "level_resources"):
            inner = _config_chain(n.func.value, aliases)
            if inner is None:
                return None
            # level_resources(k) reads resources and level k's resources (counted below)
            base, parts = _join(inner, "level{key}"), parts
            break
        return None
    key = base
    for p in reversed(parts):
        key = _join(key, p)
    return key


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if a else b


def _as_read(key: str) -> str:
    """The longest prefix of ``key`` that names config fields (methods read the whole)."""
    tp: typing.Any = Config
    out: list[str] = []
    for part in key.split("."):
        if part == "level{key}":
            tp = typing.get_type_hints(Config)["level2"]
            out.append(part)
            continue
        sub = _field_type(tp, part)
        if sub is None:
            break
        out.append(part)
        tp = sub
    return ".".join(out)


def params_read(entry: str) -> set[str]:
    closure, blocks = reachable(entry)
    defined = set()
    for m in closure - IDENTITY_MODULES:
        defined |= set(module(m).defs)
    reads: set[str] = set()
    for mod, block, top_level in blocks:
        if mod in IDENTITY_MODULES:
            continue
        aliases = dict.fromkeys(CONFIG_NAMES, "")
        if isinstance(block, ast.FunctionDef | ast.AsyncFunctionDef):
            for a in block.args.args + block.args.kwonlyargs:
                # a parameter ``cfg: TrainConfig`` or ``config: dict`` is not the Config: a
                # section handed to it is counted where it is handed over
                if a.arg in aliases and a.annotation is not None and \
                        "Config" != ast.unparse(a.annotation).split(" |")[0].strip("'\""):
                    del aliases[a.arg]
        nodes = list(_walk(block, skip_defs=top_level))
        for n in nodes:  # names assigned from the config: d = cfg.data
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and \
                    isinstance(n.targets[0], ast.Name):
                key = _config_chain(n.value, aliases)
                if key is not None:
                    aliases[n.targets[0].id] = _as_read(key)
        parents = {id(c): p for p in nodes for c in ast.iter_child_nodes(p)}
        for n in nodes:
            key = _config_chain(n, aliases)
            if key is None:
                continue
            parent = parents.get(id(n))
            if parent is not None and _config_chain(parent, aliases) is not None:
                continue  # not the whole chain
            if isinstance(parent, ast.Assign) and parent.value is n and \
                    isinstance(parent.targets[0], ast.Name):
                continue  # an alias: its uses are counted
            read = _as_read(key)
            if read == "" and key == "":  # the whole config itself, not one of its values
                if not (isinstance(parent, ast.Call) and n in parent.args + [
                        k.value for k in parent.keywords]):
                    continue  # returned, unpacked, compared...: not read here
                func = parent.func
                callee = func.id if isinstance(func, ast.Name) else \
                    func.attr if isinstance(func, ast.Attribute) else None
                if callee in defined or any(callee in module(m).defs for m in IDENTITY_MODULES):
                    continue  # handed to the package (read there), or only names a run
            reads.add(read)  # a value, a section used whole, or the config used whole
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and \
                    n.func.attr == "level_resources":
                reads.add("resources")
    return {r for r in reads if r.split(".")[0] not in IDENTITY_SECTIONS}


# ---------------------------------------------------------------------------- dvc.yaml

def stages() -> list[tuple[str, str, dict]]:
    """``(stage name, key or "", stage dict)`` of dvc.yaml, foreach stages expanded."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    levels = next(v["levels"] for v in dvc["vars"] if isinstance(v, dict) and "levels" in v)
    out = []
    for name, stage in dvc["stages"].items():
        if "foreach" in stage:
            for key in levels:
                text = yaml.safe_dump(stage["do"]).replace("${key}", str(key))
                out.append((f"{name}@{key}", str(key), yaml.safe_load(text)))
        else:
            out.append((name, "", stage))
    return out


def entry_point(stage: dict) -> str:
    m = re.search(r"pipeline/(\w+\.py)", stage["cmd"])
    assert m, stage["cmd"]
    return m.group(1)


def listed_modules(stage: dict) -> set[str]:
    return {Path(d).stem for d in stage["deps"] if str(d).startswith("src/facecascade/")}


def listed_params(stage: dict) -> set[str]:
    out = set()
    for p in stage.get("params", []):
        out |= set(p) if isinstance(p, dict) else {p}
    return out


def _covered(read: str, listed: set[str]) -> bool:
    if "params.yaml" in listed:  # "- params.yaml:" is the whole file
        return True
    return any(read == p or read.startswith(p + ".") for p in listed)


STAGES = stages()


def test_the_package_init_is_empty():
    # it is imported by every stage but is not in their deps: keep it empty
    assert (PKG / "__init__.py").read_text().strip() == ""


@pytest.mark.parametrize("name, key, stage", STAGES, ids=[s[0] for s in STAGES])
def test_stage_lists_exactly_the_modules_it_imports(name, key, stage):
    closure, _ = reachable(entry_point(stage))
    listed = listed_modules(stage)
    assert f"pipeline/{entry_point(stage)}" in stage["deps"]
    assert not closure - listed, f"{name} imports {sorted(closure - listed)}, not in dvc.yaml"
    assert not listed - closure, f"{name} lists {sorted(listed - closure)}, which it never runs"


@pytest.mark.parametrize("name, key, stage", STAGES, ids=[s[0] for s in STAGES])
def test_stage_lists_every_params_section_it_reads(name, key, stage):
    reads = params_read(entry_point(stage))
    levels = [key] if key else ["1", "2", "3"]
    reads = {r.replace("level{key}", f"level{k}") for r in reads for k in levels}
    missing = sorted(r for r in reads if not _covered(r, listed_params(stage)))
    assert not missing, f"{name} reads {missing}, not in its dvc.yaml params"


def test_the_analysis_sees_what_the_issue_found():
    # the examples of issue 12, item 1: the derivation must see each of them
    train, _ = reachable("train_level.py")
    assert {"crops", "train", "nets", "orchestration"} <= train
    assert "evaluation" in reachable("evaluate.py")[0]
    assert "predictions" in reachable("predict_level.py")[0]
    assert "" in params_read("register.py")  # the artifact stores the whole config
    assert "data.max_image_pixels" in params_read("evaluate.py")
    # and it does not over-reach: ingest runs no network code, evaluate no MLflow code
    assert not {"nets", "crops", "cascade", "tracking"} & reachable("ingest.py")[0]
    assert "tracking" not in reachable("evaluate.py")[0]
