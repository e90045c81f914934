"""The teacher's top-k next-token distribution per training example, computed once before
training, and the KL to it (sparse distillation).

Each position keeps the teacher's k most likely tokens (their log-probabilities at the
distillation temperature) and the log of the probability left over; the student's distribution
is read on the same k tokens plus one bucket for the rest. That KL, over the partition
{top-k tokens, everything else}, is never above the full-vocabulary KL (data processing) and
equals it when the rest is one token; its gradient pulls the student's top-k probabilities and
its leftover mass to the teacher's. Examples are found again by their tokens, whatever loop
batches them (retain's, the Trainer's); a row not in the cache is taught live and then kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Key = tuple[int, ...]
# (k,) int32 token ids and (k,) float32 log-probabilities per position, and the log leftover
Entry = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (n, k), (n, k), (n,)


def top_k(logits: torch.Tensor, k: int, temperature: float) -> Entry:
    """The teacher's k most likely tokens at each position of (..., V) logits, their
    log-probabilities at ``temperature``, and the log of the probability of all the others
    (k is cut to V - 1, where the leftover is one token and the KL the full one)."""
    k = min(k, logits.shape[-1] - 1)
    z = logits.float() / temperature
    lse = torch.logsumexp(z, dim=-1)  # (...)
    vals, idx = z.topk(k, dim=-1)  # (..., k)
    rest = z.scatter(-1, idx, float("-inf"))
    return idx.to(torch.int32), vals - lse.unsqueeze(-1), torch.logsumexp(rest, dim=-1) - lse


def sparse_kl(student_logits: torch.Tensor, idx: torch.Tensor, logp: torch.Tensor,
              log_rest: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over unmasked positions of KL(teacher || student) over {the teacher's top-k, the
    rest}, in nats. student_logits: (B, T, V); idx, logp: (B, T, k); log_rest, mask: (B, T)."""
    z = student_logits.float() / temperature
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (B, T, 1)
    ids = idx.long()
    log_q = z.gather(-1, ids) - lse  # (B, T, k)
    log_q_rest = torch.logsumexp(z.scatter(-1, ids, float("-inf")), dim=-1) - lse.squeeze(-1)
    p = logp.exp()
    p_rest = log_rest.exp()
    kl = (p * (logp - log_q)).sum(-1) + p_rest * (log_rest - log_q_rest)  # (B, T)
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1)


def key_of(ids: torch.Tensor, mask: torch.Tensor) -> Key:
    """An example's identity: its real tokens (a row's ids where the mask is 1)."""
    return tuple(ids[mask.bool()].tolist())


class TeacherCache:
    """Example tokens -> the teacher's top-k at each of its positions (on the CPU)."""

    def __init__(self, k: int, temperature: float):
        self.k, self.temperature = k, temperature
        self.entries: dict[Key, Entry] = {}
        self.hits = self.misses = 0

    def fill(self, teacher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Run ``teacher(ids, mask) -> (B, T, V) logits`` on a batch and keep every row."""
        idx, logp, rest = top_k(teacher(ids, mask), self.k, self.temperature)
        for b in range(ids.shape[0]):
            on = mask[b].bool()
            self.entries[key_of(ids[b], mask[b])] = (idx[b][on].cpu(), logp[b][on].cpu(),
                                                     rest[b][on].cpu())

    def lookup(self, teacher, ids: torch.Tensor, mask: torch.Tensor) -> Entry:
        """(B, T, k), (B, T, k), (B, T) for a batch: cached rows read, the others taught now
        (and kept). Padding positions hold finite fillers (token 0, log-probabilities 0), which
        the mask then zeroes."""
        keys = [key_of(ids[b], mask[b]) for b in range(ids.shape[0])]
        missing = [b for b, key in enumerate(keys) if key not in self.entries]
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            self.fill(teacher, ids[missing], mask[missing])
        on = mask.bool()
        B, T = ids.shape
        rows = [self.entries[key] for key in keys]  # row-major order = order of mask's True
        k = rows[0][0].shape[-1]
        idx = torch.zeros(B, T, k, dtype=torch.int32)
        logp = torch.zeros(B, T, k)
        rest = torch.zeros(B, T)
        idx[on.cpu()] = torch.cat([r[0] for r in rows])
        logp[on.cpu()] = torch.cat([r[1] for r in rows])
        rest[on.cpu()] = torch.cat([r[2] for r in rows])
        device = ids.device
        return idx.to(device), logp.to(device), rest.to(device)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for e in self.entries.values() for t in e)
