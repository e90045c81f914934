"""Continual-learning metrics on an accuracy matrix R: R[i][j] = score on task j after training
on tasks 0..i (T x T). Lopez-Paz & Ranzato, 2017, "Gradient Episodic Memory for Continual
Learning", https://arxiv.org/abs/1706.08840 (ACC, BWT, FWT); forgetting as the drop from the best
earlier score: Chaudhry et al., 2018, "Riemannian Walk for Incremental Learning",
https://arxiv.org/abs/1801.10112.
"""

from __future__ import annotations

from typing import Sequence

Matrix = Sequence[Sequence[float]]


def _square(R: Matrix) -> int:
    T = len(R)
    if T == 0 or any(len(row) != T for row in R):
        raise ValueError(f"accuracy matrix must be T x T, got {[len(r) for r in R]}")
    return T


def average_accuracy(R: Matrix) -> float:
    """ACC = mean_j R[T-1][j]: the final score averaged over all tasks."""
    T = _square(R)
    return sum(R[T - 1]) / T


def bwt(R: Matrix) -> float:
    """Backward transfer: mean over i < T-1 of R[T-1][i] - R[i][i] (negative = forgetting)."""
    T = _square(R)
    if T < 2:
        raise ValueError("BWT needs at least 2 tasks")
    return sum(R[T - 1][i] - R[i][i] for i in range(T - 1)) / (T - 1)


def fwt(R: Matrix, baseline: Sequence[float]) -> float:
    """Forward transfer: mean over i >= 1 of R[i-1][i] - b[i], with b[i] the score on task i of
    the model before any training (how much earlier tasks help a task not yet trained)."""
    T = _square(R)
    if T < 2 or len(baseline) != T:
        raise ValueError("FWT needs at least 2 tasks and one baseline score per task")
    return sum(R[i - 1][i] - baseline[i] for i in range(1, T)) / (T - 1)


def forgetting_matrix(R: Matrix) -> list[list[float | None]]:
    """F[k][j] = max_{l<k} R[l][j] - R[k][j] for j < k (None elsewhere): how far task j fell
    after training on task k from its best earlier score."""
    T = _square(R)
    return [[max(R[l][j] for l in range(k)) - R[k][j] if j < k else None for j in range(T)]
            for k in range(T)]


def average_forgetting(R: Matrix) -> float:
    """Mean of the last row of the forgetting matrix over the tasks 0..T-2."""
    T = _square(R)
    if T < 2:
        raise ValueError("forgetting needs at least 2 tasks")
    last = forgetting_matrix(R)[T - 1]
    return sum(last[j] for j in range(T - 1)) / (T - 1)
