"""The training loop both iterations share: epochs, early stopping on the monitored loss, divergence handling."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from speechkern import progress
from speechkern.errors import SpeechkernError

logger = logging.getLogger(__name__)

# Divergence tests: a batch whose mean squared residual exceeds this multiple of mean(Y²), or an epoch loss this
# many times the previous epoch's. Both are far outside what a stable iteration produces.
BATCH_EXPLOSION = 1e4
EPOCH_EXPLOSION = 10.0
# The training loss after each epoch is measured on this many training points (n/20, within these bounds).
TRAIN_CHECK_MIN = 100
TRAIN_CHECK_MAX = 1000
PROGRESS_INTERVAL_S = 2.0  # report progress within an epoch at most this often


class DivergenceError(SpeechkernError):
    """The EigenPro iteration diverged even after repeated step-size halving."""


class _Diverged(Exception):
    """Internal signal: the current epoch diverged."""


def train_check_size(n: int) -> int:
    """Number of training points the end-of-epoch training loss is measured on: n/20, within 100 to 1000."""
    return min(n, TRAIN_CHECK_MAX, max(TRAIN_CHECK_MIN, n // 20))


def train_epochs(
    est, model, n: int, rng: np.random.Generator, val: tuple[torch.Tensor, torch.Tensor] | None, start: float
) -> None:
    """Epochs with early stopping, best-weight tracking and divergence handling."""
    y_scale = float(model.Y.square().mean()) if model.Y.numel() else 0.0
    # The training loss of the weights themselves, on a fixed random subset of the training points: it judges
    # the end-of-epoch weights (the progressive loss judges the weights during the epoch, which can look sane
    # while the last step has just diverged).
    check = torch.from_numpy(rng.choice(n, size=train_check_size(n), replace=False))
    check = check.to(model.X.device)
    y_check = model.Y[check]
    batch = est.batch_size_
    eta = est.step_size_
    best_loss = math.inf
    best_weights = model.weights.clone()  # zeros until an epoch succeeds
    est.history_ = []
    est.best_epoch_ = 0
    est.restarts_ = 0
    epoch, waited = 0, 0
    previous = y_scale  # the loss of the zero model we start from
    task = est.progress_task
    stopped = "epoch limit"
    while epoch < est.epochs:
        epoch += 1
        started = time.perf_counter()
        try:
            progressive = run_epoch(est, model, n, batch, eta / batch, rng, y_scale, epoch, started)
            if progressive > EPOCH_EXPLOSION * previous:
                raise _Diverged(f"epoch loss {progressive:.4g} after {previous:.4g}")
            train_mse = model.train_loss(check, y_check)
            if not train_mse <= EPOCH_EXPLOSION * max(y_scale, best_loss if math.isfinite(best_loss) else 0.0):
                raise _Diverged(f"training loss {train_mse:.4g}, targets' mean square {y_scale:.4g}")
            val_mse = None
            if val is not None:
                val_mse = _mse(model.predict_val(val[0]), val[1])
                if not math.isfinite(val_mse):
                    raise _Diverged(f"validation loss {val_mse}")
        except _Diverged as why:
            est.restarts_ += 1
            if est.restarts_ > est.max_restarts:
                raise DivergenceError(
                    f"{task}: EigenPro diverged ({why}) even after halving the step size {est.max_restarts} "
                    f"times (step {eta:.4g}, batch {batch}); check the features for outliers or try a larger "
                    "bandwidth or a smaller batch_size"
                ) from None
            eta /= 2.0
            logger.warning(
                "%s: EigenPro diverged in epoch %d (%s); halving the step size to %.4g and restarting from the "
                "best weights (epoch %d)",
                task,
                epoch,
                why,
                eta,
                est.best_epoch_,
            )
            model.weights.copy_(best_weights)
            epoch -= 1
            continue
        seconds = time.perf_counter() - started
        est.history_.append(
            {
                "epoch": epoch,
                "train_mse": train_mse,
                "val_mse": val_mse,
                "progressive_mse": progressive,
                "seconds": seconds,
                "step_size": eta,
            }
        )
        progress.report(task, epoch, est.epochs, task, train_mse=train_mse, val_mse=val_mse, seconds=round(seconds, 2))
        previous = progressive
        monitored = val_mse if val_mse is not None else train_mse
        if monitored < best_loss:  # the best weights are kept even when the gain is below tol
            if monitored < best_loss * (1.0 - float(est.tol)):
                waited = 0
            else:
                waited += 1
            best_loss, est.best_epoch_ = monitored, epoch
            best_weights.copy_(model.weights)
        else:
            waited += 1
        if epoch >= est.epochs:
            stopped = "epoch limit"
            break
        if est.patience is not None and waited >= est.patience:
            stopped = "early"
            logger.info(
                "%s: stopping early after epoch %d of %d: no gain of %g in %d epochs (best epoch %d)",
                task,
                epoch,
                est.epochs,
                float(est.tol),
                waited,
                est.best_epoch_,
            )
            break
        if est.max_seconds is not None and time.perf_counter() - start > float(est.max_seconds):
            stopped = "time limit"
            logger.info(
                "%s: time limit of %g s reached after epoch %d of %d", task, float(est.max_seconds), epoch, est.epochs
            )
            break
    progress.report(task, epoch, est.epochs, task, done=True, stopped=stopped)
    est.step_size_ = eta
    if est.best_epoch_:
        model.weights.copy_(best_weights)
    est.centers_, est.weights_ = model.result()


def run_epoch(est, model, n: int, batch: int, lr: float, rng, y_scale: float, epoch: int, started: float) -> float:
    """One pass over the data in random batches; returns the progressive mean squared residual."""
    device = model.X.device
    model.start_epoch()
    order = torch.from_numpy(rng.permutation(n)).to(device)
    limit = BATCH_EXPLOSION * max(y_scale, 1e-30)
    total = 0.0
    last_report = time.perf_counter()
    n_batches = -(-n // batch)
    for b, i in enumerate(range(0, n, batch)):
        idx = order[i : i + batch]
        g, cache = model.residual(idx)
        sq = float(g.square().sum())
        batch_mse = sq / max(1, g.numel())
        if not math.isfinite(sq) or batch_mse > limit:
            raise _Diverged(f"batch residual {batch_mse:.4g}, targets' mean square {y_scale:.4g}")
        total += sq
        model.update(idx, g, cache, lr)
        now = time.perf_counter()
        if now - last_report > PROGRESS_INTERVAL_S and b + 1 < n_batches:
            last_report = now
            progress.report(
                est.progress_task,
                epoch - 1 + (b + 1) / n_batches,
                est.epochs,
                est.progress_task,
                seconds=round(now - started, 2),
            )
    return total / max(1, n * model.Y.shape[1])


# ------------------------------------------------------------------------------------------------------
# Prediction


def _mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).square().mean()) if target.numel() else 0.0
