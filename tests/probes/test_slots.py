"""The preallocated key/value cache of slot decoding (probes/slots.py): every operation leaves the
live window equal to what concatenation and left padding build, reallocations included, and a
decoding step writes in place."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from retain.probes.slots import KVSlab

H, D, LAYERS = 2, 3, 2


def _prefill(rows: int, width: int, gen: torch.Generator):
    """A prefill's cache layers and its (rows, width) left-padded mask."""
    lens = torch.randint(1, width + 1, (rows,), generator=gen)
    lens[0] = width
    mask = (torch.arange(width)[None] >= (width - lens)[:, None]).long()
    layers = []
    for _ in range(LAYERS):
        layer = DynamicLayer()
        layer.update(torch.randn(rows, H, width, D, generator=gen),
                     torch.randn(rows, H, width, D, generator=gen))
        layers.append(layer)
    return layers, mask


def _left_pad(x: torch.Tensor, width: int, axis: int) -> torch.Tensor:
    shape = list(x.shape)
    shape[axis] = width - x.shape[axis]
    return torch.cat([x.new_zeros(shape), x], dim=axis)


class Reference:
    """The same operations by concatenation (what the decoder did before the slab)."""

    def __init__(self):
        self.k = [None] * LAYERS
        self.v = [None] * LAYERS
        self.m = None

    def join(self, layers, mask):
        if self.m is None:
            self.k = [t.keys for t in layers]
            self.v = [t.values for t in layers]
            self.m = mask
            return
        w = max(self.m.shape[1], mask.shape[1])
        for i, t in enumerate(layers):
            self.k[i] = torch.cat([_left_pad(self.k[i], w, 2), _left_pad(t.keys, w, 2)])
            self.v[i] = torch.cat([_left_pad(self.v[i], w, 2), _left_pad(t.values, w, 2)])
        self.m = torch.cat([_left_pad(self.m, w, 1), _left_pad(mask, w, 1)])

    def step(self, keys, values):
        self.m = torch.cat([self.m, torch.ones(self.m.shape[0], 1, dtype=torch.long)], 1)
        for i in range(LAYERS):
            self.k[i] = torch.cat([self.k[i], keys[i]], 2)
            self.v[i] = torch.cat([self.v[i], values[i]], 2)

    def keep(self, rows):
        rows = torch.tensor(rows)
        used = self.m[rows].any(0).nonzero()
        lo = int(used[0]) if used.numel() else 0
        self.k = [k[rows, :, lo:] for k in self.k]
        self.v = [v[rows, :, lo:] for v in self.v]
        self.m = self.m[rows, lo:]


def _same(slab: KVSlab, ref: Reference):
    real = ref.m.bool()[:, None, :, None]  # padding columns hold zeros in the slab, any value is fine
    assert torch.equal(slab.mask, ref.m)
    for layer, k, v in zip(slab.layers, ref.k, ref.v):
        assert layer.keys.shape == k.shape and layer.values.shape == v.shape
        assert torch.equal(layer.keys * real, k * real)
        assert torch.equal(layer.values * real, v * real)
        assert layer.get_seq_length() == ref.m.shape[1]


def _step(slab: KVSlab, ref: Reference, gen: torch.Generator):
    rows = slab.rows
    keys = [torch.randn(rows, H, 1, D, generator=gen) for _ in range(LAYERS)]
    values = [torch.randn(rows, H, 1, D, generator=gen) for _ in range(LAYERS)]
    mask = slab.open_column()
    for i, layer in enumerate(slab.layers):  # what a model's attention layer calls
        k, v = layer.update(keys[i], values[i])
        assert k.shape[2] == mask.shape[1]
    slab.commit()
    ref.step(keys, values)


def test_every_operation_equals_concatenation_and_padding():
    """Joins of narrower and wider prefills, steps, rows leaving (columns freed on the left),
    with a headroom of one column so that buffers are reallocated again and again."""
    gen = torch.Generator().manual_seed(0)
    for headroom in (1, 3, 50):
        first, mask = _prefill(4, 5, gen)
        slab, ref = KVSlab(first, rows_cap=8, headroom=headroom), Reference()
        slab.join(first, mask)
        ref.join(first, mask)
        _same(slab, ref)
        for plan in ([], [0, 2, 3], "join 3 9", [], [1, 2, 4], "join 2 2", [0, 4], [1], "join 4 3"):
            if isinstance(plan, str):
                _, n, w = plan.split()
                layers, mask = _prefill(int(n), int(w), gen)
                slab.join(layers, mask)
                ref.join(layers, mask)
            elif plan:
                slab.keep(plan)
                ref.keep(plan)
            _same(slab, ref)
            for _ in range(3):
                _step(slab, ref, gen)
                _same(slab, ref)


def test_a_step_writes_in_place():
    """Within the headroom a decoding step allocates nothing: the buffers stay the same memory,
    where concatenation made a new copy of the whole cache for every layer at every step."""
    gen = torch.Generator().manual_seed(1)
    layers, mask = _prefill(3, 4, gen)
    slab = KVSlab(layers, rows_cap=4, headroom=10)
    slab.join(layers, mask)
    ref = Reference()
    ref.join(layers, mask)
    where = [b.data_ptr() for b in (*slab.k, *slab.v)]
    for _ in range(10):
        _step(slab, ref, gen)
    assert [b.data_ptr() for b in (*slab.k, *slab.v)] == where
    assert slab.layers[0].keys.data_ptr() >= where[0]  # a view into the buffer
    _same(slab, ref)
