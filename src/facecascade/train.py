"""Training of one network: the loop, its lr schedule and checkpoints with exact resume.

Plain PyTorch; Ray and MLflow stay outside (``orchestration.py`` passes an
``on_epoch`` callback that reports metrics and stores the checkpoint dict).

Data contract. A batch is a mapping of numpy arrays:

- ``pixels`` uint8 ``(b, H*W)``: the grey crop, row-major, of the net's input size;
- ``target`` float32 ``(b, 2k)``: the net's k points relative to its window, x0 y0 x1 y1 ...;
- ``win_wh`` float32 ``(b, 2)``: window width and height in pixels;
- ``iod`` float32 ``(b,)``: inter-ocular distance in the same pixels.

A :data:`BatchSource` is a callable that, given the 0-based epoch number, yields
the batches of that epoch; :class:`ArrayBatches` is one over in-memory arrays.

The loop (:func:`fit_one`): MSE on relative coordinates, SGD with momentum (or
Adam) and L2 weight decay, the learning rate set every iteration by :func:`lr_at`,
validation NME after every epoch, early stopping on it, best weights kept. The
checkpoint given to ``on_epoch`` holds everything needed to continue exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecascade.config import TrainConfig
from facecascade.crops import standardise
from facecascade.io import atomic_path, load_tensors
from facecascade.nets import LandmarkNet, create_net

logger = logging.getLogger(__name__)

#: given the 0-based epoch, yields that epoch's batches (see the module docstring)
BatchSource = Callable[[int], Iterable[Mapping[str, np.ndarray]]]

CHECKPOINT_FORMAT = "facecascade.train.checkpoint/1"
#: rows per validation batch (the NME does not depend on it)
VAL_BATCH = 1024
_CHECKPOINT_KEYS = ("format", "name", "model", "optimizer", "epoch", "step", "best_val_nme",
                    "best_epoch", "best_state", "bad_epochs", "torch_rng", "history", "config")


def default_device() -> torch.device:
    """``cuda`` when a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Paper eq. 6's data term as Caffe's EuclideanLoss: ``1/(2m) sum ||pred - target||^2``.

    Summed over a net's coordinates and averaged over the batch of ``m``; the L2
    term of eq. 6 is the optimiser's weight decay.

    >>> float(euclidean_loss(torch.zeros(2, 4), torch.ones(2, 4)))
    2.0
    """
    return 0.5 * ((pred - target) ** 2).sum(dim=1).mean()


def distance_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed point-to-point Euclidean distance, averaged over the batch.

    Outputs are ``(x0, y0, x1, y1, ...)``; each point's distance is what NME
    measures, so this loss weighs every face's error as the metric does, where
    :func:`euclidean_loss` lets the worst faces dominate. The gradient is bounded
    (a unit vector per point; a tiny epsilon keeps it finite at zero error).

    >>> round(float(distance_loss(torch.zeros(2, 4), torch.tensor([[3.0, 4.0, 0.0, 0.0]] * 2))), 4)
    5.0
    """
    d = (pred - target).reshape(len(pred), -1, 2)
    return torch.sqrt((d * d).sum(dim=2) + 1e-12).sum(dim=1).mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed absolute coordinate errors, averaged over the batch (bounded gradient, like
    :func:`distance_loss`, but per coordinate).

    >>> float(l1_loss(torch.zeros(2, 4), torch.tensor([[3.0, -4.0, 0.0, 0.0]] * 2)))
    7.0
    """
    return (pred - target).abs().sum(dim=1).mean()


#: the training losses by ``TrainConfig.loss`` name
LOSSES = {"euclidean": euclidean_loss, "distance": distance_loss, "l1": l1_loss}


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int | None = None) -> float:
    """Learning rate at iteration ``step`` (0-based) under ``cfg.lr_schedule``.

    ``step``: ``lr * lr_decay ** (step // lr_step)``, counted in iterations (the
    papers' schedule; its length in epochs depends on the data set's size).
    ``cosine``: ``lr * (1 + cos(pi * t)) / 2`` with ``t`` the fraction of the
    ``epochs`` done, so it spans the run whatever the data size; it needs
    ``steps_per_epoch`` (a source of unknown length passes ``step=epoch,
    steps_per_epoch=1``: the rate then changes once per epoch).

    >>> round(lr_at(250, TrainConfig(lr=5e-3, lr_decay=0.9, lr_step=100)), 10)
    0.00405
    >>> cos = TrainConfig(lr=1e-3, lr_schedule="cosine", epochs=10)
    >>> lr_at(0, cos, 100), round(lr_at(500, cos, 100), 10), lr_at(1000, cos, 100)
    (0.001, 0.0005, 0.0)
    """
    if cfg.lr_schedule == "cosine":
        if not steps_per_epoch:
            raise ValueError("lr_schedule 'cosine' needs steps_per_epoch")
        t = min(max(step / steps_per_epoch / cfg.epochs, 0.0), 1.0)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    return cfg.lr * cfg.lr_decay ** (step // cfg.lr_step)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.optimizer`` over ``model``'s parameters (lr set per step).

    >>> type(make_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="adam"))).__name__
    'Adam'
    """
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.momentum, 0.999),
                                weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


class ArrayBatches:
    """A :data:`BatchSource` over in-memory columns.

    Parameters
    ----------
    columns : mapping of str to ndarray
        Equal-length arrays (``pixels``, ``target``, ``win_wh``, ``iod``, ...).
    batch_size : int
        Rows per batch; the last batch of an epoch may be smaller.
    shuffle : bool
        Shuffle rows every epoch; the order depends only on ``(seed, epoch)``.
    seed : int
        Seed of the shuffle.

    Examples
    --------
    >>> src = ArrayBatches({"a": np.arange(5)}, 2, shuffle=False, seed=0)
    >>> [b["a"].tolist() for b in src(0)]
    [[0, 1], [2, 3], [4]]
    """

    def __init__(self, columns: Mapping[str, np.ndarray], batch_size: int, *,
                 shuffle: bool, seed: int) -> None:
        lengths = {k: len(v) for k, v in columns.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(f"columns must be non-empty and of equal length, got {lengths}")
        if batch_size < 1:
            raise ValueError(f"batch_size == {batch_size!r}, must be >= 1")
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.n = next(iter(lengths.values()))

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(self.n / self.batch_size)

    def __call__(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        for start in range(0, self.n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield {k: v[idx] for k, v in self.columns.items()}


@dataclass
class FitResult:
    """Outcome of :func:`fit_one`.

    Attributes
    ----------
    name : str
        Network name.
    state_dict : dict of str to Tensor
        Best weights (lowest validation NME), on the CPU.
    history : list of dict
        One metrics dict per epoch (see :func:`fit_one`).
    best_epoch : int
        1-based epoch of the best weights.
    best_val_nme : float
        Validation NME of the best weights.
    stopped_early : bool
        Whether early stopping ended training before ``cfg.epochs``.
    epochs_run : int
        Epochs completed in total (including those before a resume).
    seconds : float
        Wall time of this call.
    """

    name: str
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float | int]]
    best_epoch: int
    best_val_nme: float
    stopped_early: bool
    epochs_run: int
    seconds: float


def _cpu_copy(obj: Any) -> Any:
    """Deep copy of nested dicts/lists of tensors, tensors moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_cpu_copy(v) for v in obj]
    return obj


def _to_tensors(batch: Mapping[str, np.ndarray], model: LandmarkNet, device: torch.device,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised inputs ``(b, 1, H, W)`` and targets ``(b, 2k)`` on ``device``.

    Inputs are channels-last, like the model in :func:`fit_one`: on a CPU its max
    pooling and convolution backward run about 1.3-1.7x faster so than in NCHW.
    """
    x = torch.from_numpy(standardise(batch["pixels"], model.input_size))
    y = torch.as_tensor(np.asarray(batch["target"], dtype=np.float32))
    if y.shape != (len(x), model.spec.n_outputs):
        raise ValueError(f"{model.spec.name}: target of shape {tuple(y.shape)}, expected "
                         f"({len(x)}, {model.spec.n_outputs})")
    return x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)


@torch.no_grad()
def evaluate_nme(model: LandmarkNet, source: Iterable[Mapping[str, np.ndarray]],
                 device: torch.device) -> float:
    """Mean NME of ``model`` over the batches of ``source``.

    Per sample: mean over the net's points of ``||(pred - target) * win_wh|| / iod``,
    i.e. the error in pixels over the inter-ocular distance.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in source:
        x, y = _to_tensors(batch, model, device)
        wh = torch.as_tensor(np.asarray(batch["win_wh"], dtype=np.float32), device=device)
        iod = torch.as_tensor(np.asarray(batch["iod"], dtype=np.float32), device=device)
        err = ((model(x) - y).view(len(x), -1, 2) * wh[:, None, :]).norm(dim=2)
        total += (err.mean(dim=1) / iod).double().sum().item()
        count += len(x)
    model.train(was_training)
    if count == 0:
        raise ValueError(f"{model.spec.name}: the validation source yielded no samples")
    return total / count


def _batches_per_epoch(source: BatchSource) -> int | None:
    """Batches per epoch of a source that knows it (``len``), else None."""
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def fit_one(
    name: str,
    train_source: BatchSource,
    val_source: BatchSource,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    local_share: bool = False,
    widths: str = "paper",
    input_size: int | tuple[int, int] | None = None,
    resume: Mapping[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    log_every: int = 200,
    threads: int | None = None,
) -> FitResult:
    """Train the network ``name`` and return its best weights.

    Parameters
    ----------
    name : str
        Network name (``"F1"``, ``"LE21"``, ...).
    train_source, val_source : BatchSource
        Called with the 0-based epoch number; yield batches (module docstring).
        ``train_source`` should shuffle by ``(seed, epoch)`` for exact resume.
    cfg : TrainConfig
        epochs, batch size (used by the sources, not here), lr schedule, momentum,
        weight decay, dropout and early-stopping patience.
    seed : int
        ``torch.manual_seed`` at the start (weights init and dropout). On the CPU
        the same seed and data give bitwise identical weights.
    device : str or torch.device, optional
        Default :func:`default_device`.
    local_share : bool
        Level-1 nets only: locally shared conv3/conv4 weights.
    widths : str
        Conv channel plan (:data:`facecascade.specs.WIDTHS`, ``levelN.model.widths``).
    input_size : int or (int, int), optional
        Input ``(width, height)`` instead of the spec's.
    resume : mapping, optional
        A checkpoint dict given earlier to ``on_epoch`` (or :func:`load_checkpoint`);
        training continues exactly where it stopped.
    on_epoch : callable, optional
        ``on_epoch(metrics, state)`` after every epoch. ``metrics`` has ``epoch``
        (1-based, epochs completed), ``step``, ``train_loss``, ``val_nme``, ``lr``,
        ``seconds`` and ``samples_per_s``; ``state`` is a full checkpoint dict
        (CPU tensors and plain Python values only, loadable with ``weights_only``).
    log_every : int
        Log the running train loss every this many iterations (0: epoch lines only).
    threads : int, optional
        ``torch.set_num_threads(threads)`` when given.

    Returns
    -------
    FitResult
    """
    t_start = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = torch.device(device) if device is not None else default_device()

    model = create_net(name, dropout=cfg.dropout, local_share=local_share, widths=widths,
                       input_size=input_size).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    loss_fn = LOSSES[cfg.loss]
    steps_per_epoch = _batches_per_epoch(train_source)

    per_epoch = steps_per_epoch is None and cfg.lr_schedule != "step"  # length unknown

    def current_lr() -> float:
        return lr_at(epoch, cfg, 1) if per_epoch else lr_at(step, cfg, steps_per_epoch)

    epoch, step, bad_epochs, best_epoch = 0, 0, 0, 0
    best_val_nme = math.inf
    best_state = _cpu_copy(model.state_dict())
    history: list[dict[str, Any]] = []
    if resume is not None:
        _check_resume(resume, name, cfg, local_share=local_share, widths=widths,
                      input_size=model.input_size)
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        epoch, step, bad_epochs = resume["epoch"], resume["step"], resume["bad_epochs"]
        best_val_nme, best_epoch = resume["best_val_nme"], resume["best_epoch"]
        best_state = _cpu_copy(resume["best_state"])
        history = [dict(m) for m in resume["history"]]
        _set_rng_state(resume)
        logger.info("%s: resuming after epoch %d (step %d, best val NME %.5f)",
                    name, epoch, step, best_val_nme)

    while epoch < cfg.epochs and bad_epochs < cfg.patience:
        # one epoch of SGD
        t_epoch = time.perf_counter()
        model.train()
        loss_sum, n_seen = 0.0, 0
        for batch in train_source(epoch):
            x, y = _to_tensors(batch, model, device)
            lr = current_lr()
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(x)
            n_seen += len(x)
            if log_every and step % log_every == 0:
                logger.info("%s: step %d loss %.6f lr %.3g", name, step, loss.item(), lr)
        if n_seen == 0:
            raise ValueError(f"{name}: the train source yielded no samples in epoch {epoch}")
        t_train = time.perf_counter() - t_epoch

        # validation, early stopping bookkeeping
        val_nme = evaluate_nme(model, val_source(epoch), device)
        epoch += 1
        if val_nme < best_val_nme:
            best_val_nme, best_epoch, bad_epochs = val_nme, epoch, 0
            best_state = _cpu_copy(model.state_dict())
        else:
            bad_epochs += 1
        metrics = {"epoch": epoch, "step": step, "train_loss": loss_sum / n_seen,
                   "val_nme": val_nme, "lr": current_lr(),
                   "seconds": time.perf_counter() - t_epoch,
                   "samples_per_s": n_seen / max(t_train, 1e-9)}
        history.append(metrics)
        logger.info("%s: epoch %d/%d train_loss %.6f val_nme %.5f%s lr %.3g %.1fs %.0f samples/s",
                    name, epoch, cfg.epochs, metrics["train_loss"], val_nme,
                    " *" if bad_epochs == 0 else "", metrics["lr"], metrics["seconds"],
                    metrics["samples_per_s"])

        if on_epoch is not None:
            state = {
                "format": CHECKPOINT_FORMAT, "name": name,
                "model": _cpu_copy(model.state_dict()),
                "optimizer": _cpu_copy(optimizer.state_dict()),
                "epoch": epoch, "step": step, "best_val_nme": best_val_nme,
                "best_epoch": best_epoch, "best_state": _cpu_copy(best_state),
                "bad_epochs": bad_epochs, **_rng_state(),
                "history": [dict(m) for m in history],
                "config": dataclasses.asdict(cfg), "seed": seed, "local_share": local_share,
                "widths": widths,
                "input_size": list(model.input_size), "spec": model.spec.to_dict(),
            }
            on_epoch(dict(metrics), state)

    stopped_early = bad_epochs >= cfg.patience and epoch < cfg.epochs
    if stopped_early:
        logger.info("%s: early stop after epoch %d (no improvement for %d epochs)",
                    name, epoch, bad_epochs)
    logger.info("%s: best val NME %.5f at epoch %d", name, best_val_nme, best_epoch)
    return FitResult(name=name, state_dict=best_state, history=history, best_epoch=best_epoch,
                     best_val_nme=best_val_nme, stopped_early=stopped_early, epochs_run=epoch,
                     seconds=time.perf_counter() - t_start)


def _check_resume(resume: Mapping[str, Any], name: str, cfg: TrainConfig, *,
                  local_share: bool, widths: str, input_size: tuple[int, int]) -> None:
    """Refuse a checkpoint of another network or architecture; warn on a changed config."""
    missing = [k for k in _CHECKPOINT_KEYS if k not in resume]
    if missing:
        raise ValueError(f"resume: not a facecascade checkpoint (missing {', '.join(missing)})")
    if resume["name"] != name:
        raise ValueError(f"resume: checkpoint is of network {resume['name']!r}, not {name!r}")
    ckpt_arch = (bool(resume.get("local_share", False)), resume.get("widths", "paper"),
                 tuple(resume.get("input_size", input_size)))
    if ckpt_arch != (local_share, widths, tuple(input_size)):
        raise ValueError(f"resume: checkpoint has (local_share, widths, input_size) == "
                         f"{ckpt_arch}, this run {(local_share, widths, tuple(input_size))}")
    if dict(resume["config"]) != dataclasses.asdict(cfg):
        logger.warning("%s: resuming with a different TrainConfig: %s -> %s",
                       name, dict(resume["config"]), dataclasses.asdict(cfg))


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> None:
    """Write a checkpoint dict with ``torch.save``, atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, on the CPU.

    Uses ``torch.load(weights_only=True)``: only tensors and plain containers are
    unpickled, so a crafted file cannot run code.

    Raises
    ------
    ValueError
        If the file holds anything else than a facecascade checkpoint.
    """
    state = load_tensors(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a facecascade checkpoint (format "
                         f"{state.get('format') if isinstance(state, dict) else type(state)!r}, "
                         f"expected {CHECKPOINT_FORMAT!r})")
    return state
