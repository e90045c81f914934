"""The merge engine: check that the inputs fit together, then merge tensor by tensor (large
tensors in row chunks), from folders to a folder (``merge``, streaming: memory stays near a few
chunks per input, not a model) or between state dicts in memory (``merge_state_dicts``, used by
the search and by strategies). Both paths cut tensors the same way and give identical results.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from retain.version import __version__
from retain.errors import UserError
from retain.merging.base import MergeMethod, MergeOptions, TensorSet, row_chunks
from retain.merging.fisher import check_fishers
from retain.merging.output import (Entry, ShardWriter, atomic_folder, copy_support_files,
                                   parse_size, write_card)
from retain.merging.registry import get_method, parse_options
from retain.merging.sources import (DictSource, FolderSource, StatsDict, StatsFile, TensorSource,
                                    open_source, read_vocab)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
Progress = Callable[[int, int, str], None]


def check_compatible(template: TensorSource, others: Sequence[TensorSource]) -> None:
    """Same architecture, tensor names and shapes as the template, or a UserError naming the
    first offending tensor."""
    kind = template.config.get("model_type")
    names = template.names()
    for src in others:
        other_kind = src.config.get("model_type")
        if kind and other_kind and kind != other_kind:
            raise UserError(f"architecture mismatch: {src.label} is {other_kind!r}, "
                            f"{template.label} is {kind!r}")
        theirs = set(src.names())
        for name in names:
            if name not in theirs:
                raise UserError(f"tensor {name!r} of {template.label} is missing in {src.label}")
        mine = set(names)
        for name in src.names():
            if name not in mine:
                raise UserError(f"tensor {name!r} of {src.label} is not in {template.label}")
        for name in names:
            if src.shape(name) != template.shape(name):
                raise UserError(f"tensor {name!r} has shape {list(src.shape(name))} in {src.label} "
                                f"but {list(template.shape(name))} in {template.label}")


def check_tokenizers(template: Path, folders: Sequence[Path]) -> None:
    """Refuse folders whose tokenizer vocabulary differs from the template's (when both have one)."""
    ref = read_vocab(template)
    if ref is None:
        return
    by_id = {i: t for t, i in ref.items()}
    for folder in folders:
        voc = read_vocab(folder)
        if voc is None or voc == ref:
            continue
        other = {i: t for t, i in voc.items()}
        for i in sorted(set(by_id) | set(other)):
            if by_id.get(i) != other.get(i):
                raise UserError(f"tokenizer mismatch: token id {i} is {other.get(i)!r} in {folder} "
                                f"but {by_id.get(i)!r} in {template}")


def _resolve(method: MergeMethod, opts: MergeOptions, n: int, weights, densities
             ) -> tuple[list[float], list[float] | None]:
    """Per-model weights and densities, with the method's defaults."""
    if weights is None:
        weights = [method.default_weight] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise UserError(f"got {len(weights)} weights for {n} models")
    has_density = "density" in type(opts).model_fields
    if densities is not None and not has_density:
        raise UserError(f"merge method {method.name!r} takes no densities")
    if not has_density:
        return weights, None
    densities = [float(opts.density if d is None else d)
                 for d in (densities or [None] * n)]
    if len(densities) != n:
        raise UserError(f"got {len(densities)} densities for {n} models")
    for d in densities:
        if not 0 < d <= 1:
            raise UserError(f"density must be in (0, 1], got {d}")
    return weights, densities


def _check_stats(name: str, shape: tuple[int, ...], kind: str, stats: list) -> bool:
    """Whether every model has a statistic for ``name`` (none: the method's plain fallback)."""
    shapes = [s.shape(name) for s in stats]
    if all(sh is None for sh in shapes):
        return False
    want = shape if kind == "fisher" else (shape[-1], shape[-1])
    for s, sh in zip(stats, shapes):
        if sh is None:
            raise UserError(f"{s.label} has no {kind} entry for tensor {name!r} (other files do)")
        if tuple(sh) != tuple(want):
            raise UserError(f"{kind} of tensor {name!r} in {s.label} has shape {list(sh)}, "
                            f"expected {list(want)}")
    return True


def merge_tensors(method: MergeMethod, opts: MergeOptions, template: TensorSource,
                  base: TensorSource | None, models: Sequence[TensorSource],
                  weights: list[float], densities: list[float] | None, stats: list | None,
                  stat_scales: list[float] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, merged float rows) in the template's order, chunk by chunk (row ranges of
    at most CHUNK_ELEMENTS entries per input), so memory stays near a few chunks per input.
    Tensors that are not floating point (buffers, ids) are copied from the template.
    ``stat_scales``: model i's statistic is divided by stat_scales[i] (Fisher normalization)."""
    use_base = base is not None and (method.base_role == "required" or
                                     (method.base_role == "pair" and len(models) == 1))
    for name in template.names():
        shape = template.shape(name)
        if not template.dtype(name).is_floating_point:
            yield name, template.get(name)
            continue
        has_stats = bool(stats) and _check_stats(name, shape, method.stats, stats)
        whole_stats = (has_stats and method.stats == "gram") and [s.get(name).float() for s in stats]
        chunks = row_chunks(shape)

        def read(rows, prepared=None) -> TensorSet:
            st = None
            if has_stats:  # Fisher rows follow the chunk; a Gram matrix is the whole layer's
                st = whole_stats or [s.get(name, rows).float() for s in stats]
                if stat_scales is not None:
                    st = [t / c for t, c in zip(st, stat_scales)]
            return TensorSet(
                name=name, rows=rows, prepared=prepared,
                base=base.get(name, rows).float() if use_base else None,
                models=[m.get(name, rows).float() for m in models],  # (rows, *shape[1:]) each
                weights=weights, densities=densities, stats=st)

        prepared = None
        if method.prepare is not None:
            prepared = method.prepare(lambda: (read(r) for r in chunks), shape, densities, opts)
        for rows in chunks:
            merged = method.apply(read(rows, prepared), opts)
            want = shape if rows is None else (rows[1] - rows[0], *shape[1:])
            if tuple(merged.shape) != tuple(want):
                raise RuntimeError(f"{method.name} returned shape {tuple(merged.shape)} for {name}")
            yield name, merged


def _method_and_options(method_name: str, n_models: int, has_base: bool, options: dict,
                        stats_given: bool) -> tuple[MergeMethod, MergeOptions]:
    method = get_method(method_name)
    method.check_counts(n_models, has_base)
    opts = parse_options(method, options)
    if method.stats and not stats_given:
        flag = "fisher_files" if method.stats == "fisher" else "gram_files"
        raise UserError(f"merge method {method.name!r} needs one {method.stats} file per model "
                        f"({flag})")
    return method, opts


def _check_stats_up_front(method: MergeMethod, opts: MergeOptions, template: TensorSource,
                          stats: list | None) -> list[float] | None:
    """Before anything is merged or written: a Fisher merge's coverage, identity and
    normalization checks (``fisher.check_fishers``); the per-model divisors, or None."""
    if method.stats != "fisher" or not stats:
        return None
    return check_fishers(template, stats, opts.normalize)


def _tied_fishers(models: Sequence[dict[str, torch.Tensor]],
                  stats: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """A state dict from ``model.state_dict()`` names tied weights twice (``lm_head.weight`` and
    ``model.embed_tokens.weight``: one tensor), a Fisher from ``named_parameters()`` once: give
    each missing name the Fisher of the tensor it shares storage with in that model."""
    out = []
    for model, st in zip(models, stats):
        st = dict(st)
        first: dict[tuple, str] = {}
        for name, t in model.items():
            if t.numel() == 0:
                continue
            key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
            alias = first.setdefault(key, name)
            if name not in st and alias in st:
                st[name] = st[alias]
            elif alias not in st and name in st:
                st[alias] = st[name]
        out.append(st)
    return out


def merge_state_dicts(method: str, base: dict[str, torch.Tensor] | None,
                      models: Sequence[dict[str, torch.Tensor]], *,
                      weights: Sequence[float] | None = None,
                      densities: Sequence[float | None] | None = None,
                      stats: Sequence[dict[str, torch.Tensor]] | None = None,
                      **options) -> dict[str, torch.Tensor]:
    """Merge state dicts in memory; the result has the template's (base's, else the first
    model's) names and dtypes. ``stats``: one Fisher / Gram dict per model for fisher / regmean."""
    spec, opts = _method_and_options(method, len(models), base is not None, options,
                                     stats is not None)
    if stats is not None and len(stats) != len(models):
        raise UserError(f"got {len(stats)} {spec.stats} dicts for {len(models)} models")
    srcs = [DictSource(m, f"model {i}") for i, m in enumerate(models)]
    base_src = DictSource(base, "base") if base is not None else None
    template = base_src or srcs[0]
    check_compatible(template, srcs)
    w, d = _resolve(spec, opts, len(models), weights, densities)
    if stats and spec.stats == "fisher":
        stats = _tied_fishers(models, stats)
    st = [StatsDict(s, f"{spec.stats} {i}") for i, s in enumerate(stats)] if stats else None
    scales = _check_stats_up_front(spec, opts, template, st)
    pieces: dict[str, list[torch.Tensor]] = {}
    for name, t in merge_tensors(spec, opts, template, base_src, srcs, w, d, st, scales):
        pieces.setdefault(name, []).append(t)
    return {name: (p[0] if len(p) == 1 else torch.cat(p)).to(template.dtype(name))
            for name, p in pieces.items()}


def merge(method: str, models: Sequence[str | Path], out: str | Path, *,
          base: str | Path | None = None, weights: Sequence[float] | None = None,
          densities: Sequence[float | None] | None = None, shard_size: int | str = "2GB",
          dtype: str | None = None, overwrite: bool = False, progress: Progress | None = None,
          **options) -> Path:
    """Merge model folders (or LoRA adapter folders over ``base``) into the folder ``out``,
    streaming tensor by tensor; returns ``out``. ``options`` are the method's (see
    ``MERGE_METHODS[method].options``), e.g. ``density=0.5``, ``alpha=0.3``, ``seed=1``."""
    out = Path(out)
    stat_paths = options.get("fisher_files") or options.get("gram_files")
    spec, opts = _method_and_options(method, len(models), base is not None, options,
                                     bool(stat_paths))
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out_dtype = DTYPES.get(dtype) if dtype else None
    shard_bytes = parse_size(shard_size)
    resolved_out = out.resolve()
    for p in [*models, *([base] if base is not None else [])]:
        if Path(p).resolve() == resolved_out:
            raise UserError(f"output folder {out} is also an input")

    base_src = FolderSource(base) if base is not None else None
    srcs = [open_source(m, base_src) for m in models]
    template = base_src or srcs[0]
    if not isinstance(template, FolderSource):
        raise UserError(f"{models[0]} is an adapter: give --base")
    check_compatible(template, [s for s in srcs if isinstance(s, FolderSource)])
    check_tokenizers(template.path, [s.path for s in srcs if isinstance(s, FolderSource)])
    w, d = _resolve(spec, opts, len(models), weights, densities)
    stats = None
    if spec.stats:
        if len(stat_paths) != len(models):
            raise UserError(f"got {len(stat_paths)} {spec.stats} files for {len(models)} models")
        stats = [StatsFile(p) for p in stat_paths]
    scales = _check_stats_up_front(spec, opts, template, stats)

    names = template.names()
    entries = [Entry(n, template.shape(n), out_dtype if out_dtype and template.dtype(n)
                     .is_floating_point else template.dtype(n)) for n in names]
    entries_by_name = {e.name: e for e in entries}
    with atomic_folder(out, overwrite) as tmp:
        writer = ShardWriter(tmp, entries, shard_bytes,
                             {"merge_method": spec.name, "retain_version": __version__})
        try:
            done = 0
            for name, t in merge_tensors(spec, opts, template, base_src, srcs, w, d, stats,
                                         scales):
                if writer.write(name, t.to(entries_by_name[name].dtype)) and progress:
                    done += 1
                    progress(done, len(entries), name)
            writer.finish()
        finally:
            writer.abort()
        copy_support_files(template.path, tmp, out_dtype)
        per_model = []
        for i, m in enumerate(models):
            row: dict = {"path": str(m), "weight": w[i]}
            if d is not None:
                row["density"] = d[i]
            per_model.append(row)
        write_card(tmp, out=str(out), method=spec.name, citation=spec.citation,
                   base=str(base) if base is not None else None, models=per_model,
                   options=opts.model_dump(mode="json", exclude_defaults=True),
                   version=__version__, dtype=dtype)
    return out
