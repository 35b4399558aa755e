"""The objective of the search: train a small neural network, return its validation accuracy.

This module runs in the launcher's workers.  It imports scikit-learn only when a task runs, so
the master can import it (to rebuild a ``Diverged`` error from the store) without paying for
scikit-learn.  The data is scikit-learn's bundled ``load_digits`` (8x8 images of the digits
0-9, 1,797 of them): nothing is downloaded.

The network trains with plain SGD and momentum, which really does diverge when the learning
rate and momentum are both high; such a configuration raises ``Diverged``, a failure the
search records and goes on from.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from typing import Any

#: Epochs of SGD per evaluation: about 0.2-1.5 s on one core for 16-256 hidden units.  More
#: epochs separate good configurations better but make every evaluation slower.
MAX_EPOCHS = 100

#: Images per SGD step; smaller is noisier and slower per epoch.
BATCH_SIZE = 64


class Diverged(ArithmeticError):
    """Training blew up: the loss ended higher than after the first epoch, or overflowed."""


@functools.cache
def load_data() -> tuple[Any, Any, Any, Any]:
    """Train and validation splits of the digits, standardized; cached per worker process.

    Also the workers' initializer: importing scikit-learn takes a second or two, paid when a
    worker starts rather than inside the first evaluation's time.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    # A fixed split: every configuration is judged on the same validation images.
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=0,
                                                      stratify=y)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def evaluate(config: dict[str, Any]) -> dict[str, Any]:
    """Train an MLP with ``config`` and return its validation accuracy (the objective).

    ``config`` holds ``learning_rate_init``, ``momentum``, ``hidden_units`` and ``alpha``
    (the L2 penalty).  Returns ``{"accuracy", "epochs", "seconds", "gpu"}``; raises
    ``Diverged``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    start = time.perf_counter()
    x_train, x_val, y_train, y_val = load_data()
    model = MLPClassifier(
        hidden_layer_sizes=(int(config["hidden_units"]),),
        solver="sgd",
        learning_rate_init=float(config["learning_rate_init"]),
        momentum=float(config["momentum"]),
        alpha=float(config["alpha"]),
        batch_size=BATCH_SIZE,
        max_iter=MAX_EPOCHS,
        n_iter_no_change=MAX_EPOCHS,  # no early stop: every configuration gets the same epochs
        random_state=0,  # the same initial weights for every configuration
    )
    described = ", ".join(f"{k}={v:.3g}" for k, v in sorted(config.items()))
    with warnings.catch_warnings():
        # Stopping at MAX_EPOCHS before convergence is the budget we chose, not a problem.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Overflow is how divergence shows up in numpy; it is reported as Diverged below.
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            model.fit(x_train, y_train)
        except ValueError as exc:
            # scikit-learn's own check: "Solver produced non-finite parameter weights".
            if "non-finite" not in str(exc):
                raise
            raise Diverged(f"training diverged (weights overflowed) with {described}; "
                           "lower learning_rate_init or momentum") from exc
    first, last = model.loss_curve_[0], model.loss_curve_[-1]
    if not math.isfinite(last) or last > first:
        raise Diverged(f"training diverged (loss {first:.3g} -> {last:.3g}) with {described}; "
                       "lower learning_rate_init or momentum")
    return {
        "accuracy": float(model.score(x_val, y_val)),
        "epochs": int(model.n_iter_),
        "seconds": time.perf_counter() - start,
        # The GPU the launcher gave this worker (None on CPU workers).  This model does not
        # use it; a PyTorch model would simply train on "cuda" and get its own GPU.
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
