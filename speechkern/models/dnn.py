"""The DNN baseline of SPEC §7: a multilayer perceptron from features to mask values.

Three hidden layers of 1024 ReLU units with dropout 0.2, a sigmoid output and the MSE loss, trained with
mini-batches of 1024, with Adam or, as the reference did, AdaGrad with momentum (``optimizer``). Training
stops when the validation loss has not improved for ``patience`` epochs and the best weights are kept. With
``checkpoint`` set, the state after every epoch is saved (weights, optimiser and the shuffle and dropout random
generators), and a later ``fit`` with the same checkpoint resumes from there, giving the weights an uninterrupted
run gives.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from speechkern.device import resolve_device
from speechkern.errors import SpeechkernError
from speechkern.limits import DNN_COPIES, check_network, mlp_weights
from speechkern.outputs import atomic_write
from speechkern.progress import report

logger = logging.getLogger(__name__)


def build_mlp(n_inputs: int, n_outputs: int, hidden: list[int], dropout: float) -> nn.Sequential:
    """ReLU hidden layers with dropout, then a sigmoid output layer (mask values in [0, 1])."""
    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers += [nn.Linear(width, n_outputs), nn.Sigmoid()]
    return nn.Sequential(*layers)


OPTIMIZERS = ("adam", "adagrad-momentum")


class AdaGradMomentum(torch.optim.Optimizer):
    """AdaGrad step sizes with heavy-ball momentum: v ← μ·v − lr·g/√(Σg² + ε); w ← w + v.

    The learner of the OSU DNN toolbox ("ada_sgd", used by the paper's DNN baseline); ``set_momentum`` gives
    its schedule, μ = 0.5 for the first 5 epochs, then 0.9. The state (sum of squared gradients, velocity) is
    plain tensors, so checkpoints save and restore it like Adam's.
    """

    def __init__(self, params, lr: float = 1.5e-3, momentum: float = 0.5, eps: float = 1e-8) -> None:
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"AdaGradMomentum: lr must be > 0 and momentum in [0, 1), got {lr}, {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["sum_sq"] = torch.zeros_like(p)
                    state["velocity"] = torch.zeros_like(p)
                state["sum_sq"].addcmul_(p.grad, p.grad)
                step = p.grad / (state["sum_sq"].sqrt() + group["eps"])
                state["velocity"].mul_(group["momentum"]).add_(step, alpha=-group["lr"])
                p.add_(state["velocity"])
        return loss


def make_optimizer(name: str, params, learning_rate: float) -> torch.optim.Optimizer:
    """``adam`` or ``adagrad-momentum`` (:class:`AdaGradMomentum`) over ``params`` with ``learning_rate``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    if name == "adagrad-momentum":
        return AdaGradMomentum(params, lr=learning_rate)
    raise SpeechkernError(f"dnn.optimizer = {name!r}: expected one of {', '.join(OPTIMIZERS)}")


def set_momentum(optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """The OSU toolbox's momentum schedule for :class:`AdaGradMomentum`: 0.5 up to epoch 5, then 0.9."""
    if isinstance(optimizer, AdaGradMomentum):
        for group in optimizer.param_groups:
            group["momentum"] = 0.5 if epoch <= 5 else 0.9


class DNNRegressor:
    """MLP mask estimator with the scikit-learn estimator contract (``fit``/``predict``, learned ``*_``)."""

    def __init__(
        self,
        hidden: tuple[int, ...] | list[int] = (1024, 1024, 1024),
        dropout: float = 0.2,
        epochs: int = 20,
        batch_size: int = 1024,
        learning_rate: float = 1e-3,
        patience: int = 3,
        device: str = "auto",
        seed: int = 0,
        progress_task: str = "dnn",
        optimizer: str = "adam",
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.device = device
        self.seed = seed
        self.progress_task = progress_task
        self.optimizer = optimizer

    def get_params(self, deep: bool = True) -> dict:
        keys = ["hidden", "dropout", "epochs", "batch_size", "learning_rate", "patience", "device", "seed",
                "progress_task", "optimizer"]  # fmt: skip
        return {k: getattr(self, k) for k in keys}

    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        X_val: np.ndarray | None = None,
        Y_val: np.ndarray | None = None,
        checkpoint: str | os.PathLike | None = None,
    ) -> DNNRegressor:
        """Train on frames ``X`` (n, d) → mask values ``Y`` (n, k) in [0, 1]; early-stop on the validation set.

        Without a validation set, 10% of the training frames are held out (SPEC §7).
        """
        device = resolve_device(self.device)
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32).reshape(len(X), -1)
        if X_val is None or Y_val is None:
            perm = torch.randperm(len(X), generator=generator).numpy()
            n_val = max(1, len(X) // 10)
            X_val, Y_val = X[perm[:n_val]], Y[perm[:n_val]]
            X, Y = X[perm[n_val:]], Y[perm[n_val:]]
        X_val = np.asarray(X_val, dtype=np.float32)
        Y_val = np.asarray(Y_val, dtype=np.float32).reshape(len(X_val), -1)

        self.n_features_in_ = X.shape[1]
        self.n_outputs_ = Y.shape[1]
        check_network(f"hidden={list(self.hidden)}", mlp_weights([X.shape[1], *self.hidden, Y.shape[1]]), DNN_COPIES,
                      "choose fewer or narrower hidden layers, such as [1024, 1024, 1024]")  # fmt: skip
        self.network_ = build_mlp(self.n_features_in_, self.n_outputs_, list(self.hidden), self.dropout).to(device)
        optimizer = make_optimizer(self.optimizer, self.network_.parameters(), self.learning_rate)
        self.history_: list[dict] = []
        best_state = {k: v.detach().clone() for k, v in self.network_.state_dict().items()}
        best_loss, start_epoch = float("inf"), 0
        if checkpoint is not None and Path(f"{checkpoint}.safetensors").is_file():
            initial = {k: v.detach().clone() for k, v in self.network_.state_dict().items()}
            initial_rng = _rng_states(generator, device)
            try:
                state = _load_checkpoint(checkpoint, self.network_, optimizer, generator, device)
            except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as err:  # damaged
                logger.warning("%s.safetensors: the DNN checkpoint is unreadable (%s); training from epoch 1",
                               checkpoint, err)  # fmt: skip
                self.network_.load_state_dict(initial)
                optimizer = make_optimizer(self.optimizer, self.network_.parameters(), self.learning_rate)
                _set_rng_states(initial_rng, generator, device)
            else:
                self.history_, best_loss, start_epoch = state["history"], state["best_loss"], state["epoch"]
                best_state = state["best_state"]

        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        Xv, Yv = torch.from_numpy(X_val).to(device), torch.from_numpy(Y_val).to(device)
        stale = sum(1 for _ in _trailing_stale(self.history_))
        for epoch in range(start_epoch + 1, self.epochs + 1):
            if stale >= self.patience:
                break
            started = time.perf_counter()
            set_momentum(optimizer, epoch)
            self.network_.train()
            total, seen = 0.0, 0
            for idx in torch.randperm(len(Xt), generator=generator).split(self.batch_size):
                xb, yb = Xt[idx].to(device, non_blocking=True), Yt[idx].to(device, non_blocking=True)
                loss = nn.functional.mse_loss(self.network_(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                seen += len(idx)
            val_mse = self._mse(Xv, Yv)
            seconds = time.perf_counter() - started
            self.history_.append({"epoch": epoch, "train_mse": total / seen, "val_mse": val_mse, "seconds": seconds})
            if val_mse < best_loss:
                best_loss, stale = val_mse, 0
                best_state = {k: v.detach().clone() for k, v in self.network_.state_dict().items()}
            else:
                stale += 1
            report(self.progress_task, epoch, self.epochs, "DNN epochs", train_mse=total / seen, val_mse=val_mse,
                   seconds=seconds, milestone=True)  # fmt: skip
            if checkpoint is not None:
                _save_checkpoint(checkpoint, self.network_, optimizer, generator, best_state, self.history_, best_loss,
                                 epoch)  # fmt: skip
        self.network_.load_state_dict(best_state)
        self.network_.eval()
        self.best_epoch_ = min(self.history_, key=lambda h: h["val_mse"])["epoch"] if self.history_ else 0
        self.best_val_mse_ = best_loss
        return self

    @torch.no_grad()
    def _mse(self, X: torch.Tensor, Y: torch.Tensor) -> float:
        self.network_.eval()
        total = 0.0
        for xb, yb in zip(X.split(8192), Y.split(8192), strict=True):
            total += float(nn.functional.mse_loss(self.network_(xb), yb, reduction="sum"))
        return total / Y.numel()

    @torch.no_grad()
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Mask values (n, k) in [0, 1] for frames ``X`` (n, d)."""
        self.network_.eval()
        device = next(self.network_.parameters()).device
        out = [self.network_(torch.from_numpy(np.asarray(b, np.float32)).to(device)).cpu() for b in
               np.array_split(X, max(1, int(np.ceil(len(X) / 8192))))]  # fmt: skip
        return torch.cat(out).numpy() if out else np.zeros((0, self.n_outputs_), np.float32)

    # -- persistence: safetensors + JSON, no pickle -------------------------------------------------------

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Weights as tensors and everything else as a JSON-able dictionary."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.network_.state_dict().items()}
        config = {
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()},
            "n_features_in": self.n_features_in_,
            "n_outputs": self.n_outputs_,
            "history": self.history_,
            "best_epoch": self.best_epoch_,
            "best_val_mse": self.best_val_mse_,
        }
        return tensors, config

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], config: dict, device: str = "cpu") -> DNNRegressor:
        params = dict(config["params"], device=device)
        model = cls(**params)
        model.n_features_in_, model.n_outputs_ = config["n_features_in"], config["n_outputs"]
        model.history_, model.best_epoch_ = config["history"], config["best_epoch"]
        model.best_val_mse_ = config["best_val_mse"]
        net = build_mlp(model.n_features_in_, model.n_outputs_, list(model.hidden), model.dropout)
        net.load_state_dict(tensors)
        model.network_ = net.to(resolve_device(device)).eval()
        return model


def _trailing_stale(history: list[dict]):
    """Epochs at the end of ``history`` that did not improve on the best validation loss before them."""
    best = float("inf")
    stale = []
    for h in history:
        if h["val_mse"] < best:
            best, stale = h["val_mse"], []
        else:
            stale.append(h)
    return stale


def _rng_states(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The shuffle generator's state and the global one that dropout draws from (CUDA's on a GPU)."""
    states = {"rng.shuffle": generator.get_state(), "rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(states["rng.shuffle"])
    torch.set_rng_state(states["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in states:
        torch.cuda.set_rng_state(states["rng.cuda"], device)


def _save_checkpoint(path, network, optimizer, generator, best_state, history, best_loss, epoch) -> None:
    """One safetensors file (metadata in its header), written atomically: weights, optimiser and RNG states."""
    device = next(network.parameters()).device
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    tensors |= {f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()}
    tensors |= {k: v.cpu().contiguous() for k, v in _rng_states(generator, device).items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, value in st.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"epoch": epoch, "history": history, "best_loss": best_loss, "param_groups": opt["param_groups"]}
    atomic_write(f"{path}.safetensors", lambda p: save_file(tensors, p, metadata={"checkpoint": json.dumps(meta)}))


def _load_checkpoint(path, network, optimizer, generator, device: torch.device) -> dict:
    with safe_open(f"{path}.safetensors", framework="pt") as f:
        meta = json.loads((f.metadata() or {})["checkpoint"])
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    network.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    _set_rng_states(tensors, generator, device)
    meta["best_state"] = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return meta
