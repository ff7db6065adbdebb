"""ONNX export of a whole cascade, and a cascade that runs on onnxruntime.

One ``.onnx`` file holds every network of the cascade and the cascade's
manifest, so the file alone is enough to run it:

* **Graph.** A single ONNX graph (opset :data:`OPSET`) with one independent
  input/output pair per net: input ``F1`` float32 ``(N, 1, 39, 39)`` ->
  output ``F1_out`` float32 ``(N, 10)``, ``EN1`` -> ``EN1_out``, ...,
  ``RM32`` -> ``RM32_out``. Inputs are *standardised* crops
  (:func:`facecascade.crops.standardise`), outputs the nets' raw relative
  coordinates ``x0, y0, x1, y1, ...``. Each pair has its own dynamic batch axis
  (``F1_batch``, ...). The graph is exported in one call of
  ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter; the
  default dynamo exporter needs ``onnxscript``) from a wrapper module whose
  ``forward(*crops)`` returns every net's output.
* **Metadata** (``metadata_props``): ``facecascade.manifest`` is the cascade's
  manifest JSON (format, version, levels, nets, params -- the same dict as
  ``manifest.json`` of a cascade directory) and ``facecascade.onnx`` records
  the export (opset, exporter, torch version, and ``io``: net name ->
  ``[input name, output name]``).
* **Glue stays in Python.** Crop cutting, standardisation, level-1 fusion,
  pair averages and the level-2/3 windows are :class:`facecascade.cascade.Cascade`'s
  own code: :class:`OnnxCascade` subclasses it and overrides only
  ``Cascade._forward`` (standardised crops -> raw net outputs), so the PyTorch
  and ONNX paths cannot drift apart.

At load time every net's subgraph is cut out of the file with
:class:`onnx.utils.Extractor` and gets its own ``onnxruntime.InferenceSession``
(the levels run one after the other with Python glue in between, so one
session over the whole graph, which would need every input at once, does not fit).

``onnx`` and ``onnxruntime`` are imported lazily, inside the functions that need them.

Examples
--------
>>> import tempfile
>>> from facecascade.cascade import Cascade
>>> from facecascade.config import Config
>>> cascade = Cascade.untrained(Config(), levels=1, seed=0)
>>> image, box = np.full((64, 64), 128, np.uint8), np.array([[8.0, 8.0, 56.0, 56.0]])
>>> with tempfile.TemporaryDirectory() as tmp:
...     onnx_cascade = load_onnx(export_onnx(cascade, f"{tmp}/cascade.onnx"))
>>> points = onnx_cascade.predict([image], box)[1]
>>> bool(np.allclose(points, cascade.predict([image], box)[1], atol=1e-3))
True
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cascade import MANIFEST_FORMAT, MANIFEST_VERSION, Cascade, cascade_nets
from .config import config_from_dict
from .io import atomic_path
from .specs import get_spec

#: ONNX opset of exported cascades
OPSET = 17
#: ``metadata_props`` key of the cascade manifest JSON
MANIFEST_KEY = "facecascade.manifest"
#: ``metadata_props`` key of the export record JSON (opset, exporter, io names)
EXPORT_KEY = "facecascade.onnx"
#: largest |onnxruntime - torch| accepted by the export self-check, in relative units
CHECK_TOLERANCE = 1e-4


class OnnxExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch nets."""


def io_names(name: str) -> tuple[str, str]:
    """Input and output names of net ``name`` in an exported graph: ``(name, name + "_out")``."""
    return name, f"{name}_out"


class _AllNets(torch.nn.Module):
    """Wrapper whose ``forward(*crops)`` runs every net on its own input."""

    def __init__(self, nets: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(net(x) for net, x in zip(self.nets, xs, strict=True))


def _example_input(name: str, batch: int, device: torch.device | str = "cpu",
                   seed: int = 0) -> torch.Tensor:
    """A standard-normal ``(batch, 1, H, W)`` float32 input of net ``name``."""
    w, h = get_spec(name).input_size
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, h, w, generator=gen).to(device)


def export_onnx(cascade: Cascade, out: str | Path, *, opset: int = OPSET,
                check: bool = True) -> Path:
    """Write every network of ``cascade`` and its manifest into one ``.onnx`` file.

    Parameters
    ----------
    cascade : Cascade
        A PyTorch cascade (e.g. from :func:`facecascade.cascade.load_cascade`).
    out : path
        The file to write (atomically); its folder is created if missing.
    opset : int
        ONNX opset of the graph.
    check : bool
        Check the written model (``onnx.checker``) and run every net once on
        onnxruntime against PyTorch on random inputs (a few hundred ms);
        raise :class:`OnnxExportError` when any output differs by more than
        :data:`CHECK_TOLERANCE`.

    Returns
    -------
    Path
        ``out``.
    """
    import onnx

    out = Path(out)
    names = cascade_nets(cascade.levels)
    nets = [cascade.nets[n] for n in names]
    inputs = tuple(_example_input(n, 2, cascade.device) for n in names)
    ios = {n: io_names(n) for n in names}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the legacy exporter's deprecation notice, and the tracer's note on the nets'
        # input-shape check (a Python-side guard, rightly left out of the graph)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(  # training=EVAL (the default): dropout off while tracing
            _AllNets(nets), inputs, buf, dynamo=False, opset_version=opset,
            input_names=[ios[n][0] for n in names], output_names=[ios[n][1] for n in names],
            dynamic_axes={io_name: {0: f"{n}_batch"} for n in names for io_name in ios[n]},
            do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    model.graph.name = "facecascade"
    model.doc_string = (f"facecascade cascade of {cascade.levels} level(s): one input/output pair "
                        f"per net ({', '.join(names)}); glue in facecascade.export.OnnxCascade")
    record = {"opset": opset, "exporter": "torch.onnx.export(dynamo=False)",
              "torch": torch.__version__, "io": {n: list(ios[n]) for n in names}}
    onnx.helper.set_model_props(model, {MANIFEST_KEY: json.dumps(cascade.manifest),
                                        EXPORT_KEY: json.dumps(record)})
    if check:
        onnx.checker.check_model(model)
        _self_check(cascade, model, names)
    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp))
    return out


def _self_check(cascade: Cascade, model: Any, names: Sequence[str]) -> None:
    """Run each net on onnxruntime and PyTorch (batch 3); raise on a mismatch."""
    sessions = _sessions(model, {n: io_names(n) for n in names}, threads=1)
    for name in names:
        x = _example_input(name, 3, seed=1)
        with torch.no_grad():
            want = cascade.nets[name](x.to(cascade.device)).cpu().numpy()
        got = sessions[name].run(None, {io_names(name)[0]: x.numpy()})[0]
        diff = float(np.abs(got - want).max())
        if not diff <= CHECK_TOLERANCE:
            raise OnnxExportError(f"{name}: onnxruntime differs from PyTorch by {diff:.3g} "
                                  f"(> {CHECK_TOLERANCE:g})")


def _sessions(model: Any, ios: Mapping[str, Sequence[str]], *, threads: int | None,
              providers: Sequence[str] | None = None) -> dict[str, Any]:
    """One ``InferenceSession`` per net, over its subgraph extracted from ``model``."""
    import onnx.utils
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
    extractor = onnx.utils.Extractor(model)
    sessions = {}
    for name, (inp, outp) in ios.items():
        sub = extractor.extract_model([inp], [outp])
        sessions[name] = ort.InferenceSession(sub.SerializeToString(), opts, providers=providers)
    return sessions


def read_onnx_manifest(model: Any, where: str = "model") -> tuple[dict[str, Any], dict[str, Any]]:
    """The cascade manifest and export record of a loaded ``onnx.ModelProto``.

    Raises
    ------
    ValueError
        When the model was not written by :func:`export_onnx`, or by an
        incompatible version.
    """
    props = {p.key: p.value for p in model.metadata_props}
    if MANIFEST_KEY not in props:
        raise ValueError(f"{where}: not a facecascade ONNX cascade (no {MANIFEST_KEY!r} "
                         "metadata; write it with `facecascade export`)")
    try:
        manifest = json.loads(props[MANIFEST_KEY])
        record = json.loads(props.get(EXPORT_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: its facecascade metadata is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(record, dict):
        raise ValueError(f"{where}: its facecascade metadata must be JSON objects")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{where}: format {manifest.get('format')!r}, "
                         f"expected {MANIFEST_FORMAT!r}")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{where}: version {manifest.get('version')!r}, "
                         f"this facecascade reads {MANIFEST_VERSION}")
    return manifest, record


class OnnxCascade(Cascade):
    """A cascade whose networks run on onnxruntime; glue shared with :class:`Cascade`.

    ``predict`` and ``predict_level`` behave as :class:`Cascade`'s (they are
    Cascade's methods); only ``_forward`` differs. There are no PyTorch nets:
    ``nets`` raises, so such a cascade cannot be saved as a directory or re-exported
    (keep the PyTorch artifact for that).

    Parameters
    ----------
    path : path
        A file written by :func:`export_onnx`.
    threads : int, optional
        onnxruntime intra-op threads per net (default: onnxruntime's choice).
    providers : sequence of str, optional
        onnxruntime execution providers (default ``["CPUExecutionProvider"]``).

    Attributes
    ----------
    cfg : Config
        Rebuilt from the manifest's params.
    levels : int
        Levels of the exported cascade.
    path : Path
        The ``.onnx`` file.
    sessions : dict
        Net name -> ``onnxruntime.InferenceSession``.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        # Cascade.__init__ is not called: it builds PyTorch nets, which this class has none of.
        import onnx

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        try:
            model = onnx.load_model(str(self.path))
        except Exception as exc:  # noqa: BLE001 - protobuf/onnx raise several types
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise ValueError(f"{self.path}: not a readable ONNX model: {first}") from None
        manifest, record = read_onnx_manifest(model, str(self.path))
        levels = int(manifest["levels"])
        if levels not in (1, 2, 3):
            raise ValueError(f"{self.path}: levels == {levels!r}, must be 1, 2 or 3")
        self.cfg = config_from_dict(manifest["params"])
        self.levels = levels
        self.device = torch.device("cpu")
        self._manifest = manifest
        io_map = record.get("io", {})
        graph_inputs = {i.name for i in model.graph.input}
        graph_outputs = {o.name for o in model.graph.output}
        self._io: dict[str, tuple[str, str]] = {}
        for name in cascade_nets(self.levels):
            inp, outp = io_map.get(name, io_names(name))
            if inp not in graph_inputs or outp not in graph_outputs:
                raise ValueError(f"{self.path}: the graph lacks net {name} "
                                 f"(input {inp!r} -> output {outp!r})")
            self._io[name] = (inp, outp)
        self.sessions = _sessions(model, self._io, threads=threads, providers=providers)

    @property
    def nets(self) -> dict[str, torch.nn.Module]:  # type: ignore[override]
        """Not available: the networks of an ONNX cascade live in onnxruntime sessions."""
        raise TypeError(f"{self.path}: an ONNX cascade has no PyTorch networks; "
                        "load the cascade directory it was exported from instead")

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest stored in the file (a copy)."""
        return json.loads(json.dumps(self._manifest))

    def _forward(self, name: str, x: np.ndarray) -> np.ndarray:
        inp, _ = self._io[name]
        return self.sessions[name].run(None, {inp: np.ascontiguousarray(x, np.float32)})[0]

    def __repr__(self) -> str:
        return f"OnnxCascade({str(self.path)!r}, levels={self.levels})"


def load_onnx(path: str | Path, *, threads: int | None = None,
              providers: Sequence[str] | None = None) -> OnnxCascade:
    """Load a cascade written by :func:`export_onnx` (see :class:`OnnxCascade`)."""
    return OnnxCascade(path, threads=threads, providers=providers)
