"""The key/value cache of greedy decoding by slots (``engine.generate``), kept in buffers
allocated once and written in place.

HF's ``DynamicLayer`` grows its cache by ``torch.cat`` at every step: a fresh tensor of the whole
cache per layer per token, which on a small model costs as much as the step's matrix multiplies
(a new allocation of that size is page-faulted in afresh each time). ``KVSlab`` holds every
layer's keys and values in (rows, heads, columns, head_dim) buffers with room for the answers;
a decoding step writes one column, and the rows that leave, the rows that join and the columns no
row needs any more move the live window instead of the data where they can.

Geometry, the same for every layer and for the attention mask:
    live rows    [0, rows)         one per prompt being answered
    live columns [start, end)      left-padded to a common length; ``mask`` says which are real
A model step sees ``layer.keys = K[:rows, :, start:end]`` through ``SlabLayer``, a ``DynamicLayer``
whose ``update`` writes the step's keys at ``end`` instead of concatenating.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class SlabLayer(DynamicLayer):
    """One decoder layer's view of a ``KVSlab``: ``keys``/``values`` are the live window; an
    update writes the new columns at the slab's ``end`` (the slab commits them after the step)."""

    def __init__(self, slab: "KVSlab", index: int):
        super().__init__()
        self.slab, self.index = slab, index
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        k, v = self.slab.write(self.index, key_states, value_states)
        self.keys, self.values = k, v
        return k, v


class KVSlab:
    """Preallocated keys, values and attention mask of the rows being decoded (module docstring).

    ``rows_cap`` rows at most. Buffers are reallocated (the live window copied to their left)
    only when a joining prompt is wider than the room on the left of the window, or a step finds
    no column free on its right; each reallocation leaves ``headroom`` free columns."""

    def __init__(self, template: list[DynamicLayer], rows_cap: int, headroom: int):
        # per layer, from a prefill's cache: (key heads, key dim, dtype, device, value heads, value dim)
        self.specs = [(t.keys.shape[1], t.keys.shape[3], t.keys.dtype, t.keys.device,
                       t.values.shape[1], t.values.shape[3]) for t in template]
        self.rows_cap, self.headroom = rows_cap, max(1, headroom)
        self.rows = self.start = self.end = 0
        self.cols = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.m = torch.zeros(rows_cap, 0, dtype=torch.long)  # (rows_cap, cols) 1 = real column
        self.layers = [SlabLayer(self, i) for i in range(len(template))]
        self._allocate(0)

    # ------------------------------------------------------------------ storage
    def _allocate(self, cols: int, shift: int = 0) -> None:
        """Buffers of ``cols`` columns, the live window copied in at column ``shift``."""
        width = self.end - self.start
        k, v = [], []
        for i, (hk, dk, dtype, device, hv, dv) in enumerate(self.specs):
            nk = torch.zeros(self.rows_cap, hk, cols, dk, dtype=dtype, device=device)
            nv = torch.zeros(self.rows_cap, hv, cols, dv, dtype=dtype, device=device)
            if width and self.rows:
                nk[:self.rows, :, shift:shift + width] = self.k[i][:self.rows, :, self.start:self.end]
                nv[:self.rows, :, shift:shift + width] = self.v[i][:self.rows, :, self.start:self.end]
            k.append(nk)
            v.append(nv)
        m = torch.zeros(self.rows_cap, cols, dtype=torch.long)
        if width and self.rows:
            m[:self.rows, shift:shift + width] = self.m[:self.rows, self.start:self.end]
        self.k, self.v, self.m, self.cols = k, v, m, cols
        self.start, self.end = shift, shift + width

    def _refresh(self) -> None:
        for layer, k, v in zip(self.layers, self.k, self.v):
            layer.keys = k[:self.rows, :, self.start:self.end]
            layer.values = v[:self.rows, :, self.start:self.end]

    @property
    def mask(self) -> torch.Tensor:
        """(rows, end - start) the live attention mask."""
        return self.m[:self.rows, self.start:self.end]

    # ------------------------------------------------------------------ geometry
    def join(self, template: list[DynamicLayer], mask: torch.Tensor) -> None:
        """Append the rows of a prefill (its cache layers and (n, w) left-padded mask), the live
        window widened on the left to the longer of the two (zeros, masked)."""
        n, w = mask.shape
        if self.rows == 0:
            self.start = self.end = 0
        width = max(self.end - self.start, w)
        if self.end < width:  # no room on the left: fresh buffers
            self._allocate(width + self.headroom, shift=width - (self.end - self.start))
        lo = self.end - width
        old, new = slice(0, self.rows), slice(self.rows, self.rows + n)
        for i, t in enumerate(template):
            for buf, src in ((self.k[i], t.keys), (self.v[i], t.values)):
                buf[old, :, lo:self.start] = 0
                buf[new, :, lo:self.end - w] = 0
                buf[new, :, self.end - w:self.end] = src
        self.m[old, lo:self.start] = 0
        self.m[new, lo:self.end - w] = 0
        self.m[new, self.end - w:self.end] = mask
        self.rows, self.start = self.rows + n, lo
        self._refresh()

    def keep(self, rows: list[int]) -> None:
        """Keep these live rows (ascending), in this order; then drop the columns on the left no
        kept row uses any more."""
        for dst, src in enumerate(rows):  # src >= dst: a row is read before it is written over
            if src != dst:
                for buf in (*self.k, *self.v):
                    buf[dst, :, self.start:self.end] = buf[src, :, self.start:self.end]
                self.m[dst, self.start:self.end] = self.m[src, self.start:self.end]
        self.rows = len(rows)
        used = self.mask.any(0).nonzero()
        self.start += int(used[0]) if used.numel() else 0
        self._refresh()

    def open_column(self) -> torch.Tensor:
        """Room for one more column, marked real for every live row; the mask with it, (rows, L+1)."""
        if self.end == self.cols:  # full: live window moved to the left of fresh buffers
            self._allocate(self.end - self.start + self.headroom)
        self.m[:self.rows, self.end] = 1
        return self.m[:self.rows, self.start:self.end + 1]

    def write(self, i: int, keys: torch.Tensor, values: torch.Tensor):
        """Layer ``i``'s new (rows, heads, t, dim) keys and values at ``end``; the window with them."""
        t = keys.shape[2]
        if self.end + t > self.cols:
            raise RuntimeError("KVSlab.write past its columns: call open_column() before a step")
        self.k[i][:self.rows, :, self.end:self.end + t] = keys
        self.v[i][:self.rows, :, self.end:self.end + t] = values
        return (self.k[i][:self.rows, :, self.start:self.end + t],
                self.v[i][:self.rows, :, self.start:self.end + t])

    def commit(self, t: int = 1) -> None:
        """The step's ``t`` columns are now part of the live window."""
        self.end += t
        self._refresh()
