"""Model-selection rules of the losses bench: which epoch of a training run to keep, from its validation curves.

docs/losses.md compares the rules on the bundled sets and says which one Hui, Belkin & Wright's code used.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from speechkern.errors import SpeechkernError

# rules that read a validation curve during training; "last" reads none, "budget" trains twice (see the bench)
CURVE_RULES = ("accuracy-smoothed", "accuracy-latest", "accuracy-earliest", "loss")
SELECTION_RULES = (*CURVE_RULES, "last", "budget")
BUDGET_RULE = "accuracy-earliest"  # how Hui, Belkin & Wright's code picks the epoch budget on its selection split

SELECTION_HELP = {
    "accuracy-smoothed": "best validation accuracy averaged over a centred window of epochs, the latest on ties",
    "accuracy-latest": "best validation accuracy, the latest epoch on ties",
    "accuracy-earliest": "best validation accuracy, the earliest epoch on ties",
    "loss": "lowest validation loss (the training loss on the validation part), the earliest on ties",
    "last": "the last epoch, no validation part",
    "budget": "an epoch budget (and learning rate) chosen on a selection split by best validation accuracy "
    "(earliest on ties), then a fresh network trained that many epochs on the whole training part",
}


def check_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`SELECTION_RULES`, else a SpeechkernError naming the choices."""
    if rule not in SELECTION_RULES:
        raise SpeechkernError(f"selection rule {rule!r} is unknown; choose from {', '.join(SELECTION_RULES)}")
    return rule


def _half(window: int) -> int:
    return max(0, (window - 1) // 2)


def _score(rule: str, accuracy: Sequence[float], loss: Sequence[float], epoch: int, window: int) -> float:
    """The number the rule maximises at ``epoch`` (0-based) given the curves so far (higher is better)."""
    if rule == "loss":
        return -loss[epoch]
    if rule == "accuracy-smoothed":
        h = _half(window)
        return float(np.mean(accuracy[max(0, epoch - h) : epoch + h + 1]))
    return accuracy[epoch]


def _better(rule: str, score: float, best: float | None) -> bool:
    if best is None:
        return True
    # the accuracy rules but "earliest" move to a later epoch on ties; loss ties keep the earlier epoch
    return score > best if rule in ("accuracy-earliest", "loss") else score >= best


def select_epoch(
    rule: str, val_accuracy: Sequence[float], val_loss: Sequence[float] | None = None, window: int = 5
) -> int:
    """The epoch (1-based) a rule keeps from per-epoch validation curves.

    Parameters
    ----------
    rule : one of :data:`CURVE_RULES`, or ``"last"`` (the last epoch).
    val_accuracy : validation accuracy after each epoch, shape ``(epochs,)``, fractions in [0, 1].
    val_loss : validation loss after each epoch, shape ``(epochs,)``; needed by ``"loss"``.
    window : epochs averaged by ``"accuracy-smoothed"`` (centred, truncated at both ends of the curve).

    Raises SpeechkernError for an unknown rule or an empty curve.
    """
    check_rule(rule)
    n = len(val_accuracy)
    if n == 0:
        raise SpeechkernError("cannot select an epoch from an empty validation curve")
    if rule in ("last", "budget"):
        return n
    losses = val_loss if val_loss is not None else [0.0] * n
    best: tuple[float, int] | None = None
    for epoch in range(n):
        score = _score(rule, val_accuracy, losses, epoch, window)
        if _better(rule, score, None if best is None else best[0]):
            best = (score, epoch)
    assert best is not None
    return best[1] + 1


class EpochSelector:
    """Keeps, while a network trains, the weights of the epoch :func:`select_epoch` will name at the end.

    Call :meth:`update` after each epoch with the validation numbers and the model; :meth:`finish` returns the
    selected epoch (1-based), its score and its weights. Memory: the best weights plus, for
    ``"accuracy-smoothed"``, the last ``window // 2 + 1`` epochs' weights (a smoothed value is final only once
    the epochs after it are known).
    """

    def __init__(self, rule: str, window: int = 5) -> None:
        if check_rule(rule) not in CURVE_RULES:
            raise SpeechkernError(f"selection rule {rule!r} reads no validation curve")
        self.rule, self.window = rule, window
        self.accuracy: list[float] = []
        self.loss: list[float] = []
        self._recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=_half(window) + 1)
        self._best: tuple[float, int, dict[str, Any]] | None = None

    def _consider(self, epoch: int, state: dict[str, Any]) -> None:
        score = _score(self.rule, self.accuracy, self.loss, epoch, self.window)
        if _better(self.rule, score, None if self._best is None else self._best[0]):
            self._best = (score, epoch, copy.deepcopy(state))

    def update(self, accuracy: float, loss: float, state: dict[str, Any]) -> None:
        """Record one epoch: validation accuracy and loss, and the model's ``state_dict()`` after it."""
        self.accuracy.append(float(accuracy))
        self.loss.append(float(loss))
        epoch = len(self.accuracy) - 1
        if self.rule != "accuracy-smoothed":
            self._consider(epoch, state)
            return
        self._recent.append((epoch, copy.deepcopy(state)))
        ready = epoch - _half(self.window)  # the smoothed value of this epoch no longer changes
        if ready >= 0:
            self._consider(ready, dict(self._recent)[ready])

    def score(self, epoch: int) -> float:
        """What the rule compares at ``epoch`` (1-based; higher is better): accuracy, smoothed accuracy or −loss."""
        return _score(self.rule, self.accuracy, self.loss, epoch - 1, self.window)

    def finish(self) -> tuple[int, float, dict[str, Any]]:
        """(selected epoch, 1-based; its validation accuracy; its weights). Raises if no epoch was recorded."""
        if not self.accuracy:
            raise SpeechkernError("cannot select an epoch: no epoch was trained")
        if self.rule == "accuracy-smoothed":
            done = len(self.accuracy) - _half(self.window)
            for epoch, state in self._recent:
                if epoch >= max(done, 0):
                    self._consider(epoch, state)
        assert self._best is not None
        _, epoch, state = self._best
        return epoch + 1, self.accuracy[epoch], state
