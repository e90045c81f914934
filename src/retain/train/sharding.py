"""Sharded training (FSDP2): each process keeps 1/world of every parameter, its gradient and
AdamW's two moments, and all-gathers a layer's weights only while that layer runs.

``shard_model`` applies torch's ``fully_shard`` to each decoder layer and then to the model (the
parameters become ``DTensor``s split along dim 0 over a 1-D mesh of every process). Everything
in retain that handles per-parameter tensors goes through the helpers here, so that the same
code serves a plain and a sharded model:

- ``local(t)``: this process's shard of a DTensor (a plain tensor unchanged);
- ``all_sum(x)``: one all-reduce of a value summed over shards (a penalty, a norm's square);
- ``to_local_tree``/``from_local_tree``: a dict of tensors as this process's plain shards plus
  the global shapes, and back (sharded checkpoints: one safetensors file per process);
- ``full_state``: every parameter whole, on every process (the final save).

Why not accelerate's FSDP plugin: on the CPU (gloo), accelerate 1.16 silently wraps the model
in DDP instead (``MULTI_CPU``), and FSDP1 refuses the CPU; ``fully_shard`` runs on both, so one
path is tested here and runs on the GPU unchanged.
"""

from __future__ import annotations

import torch

SHARDABLE = ("full", "ewc", "l2sp", "mas", "replay")  # tested sharded (online EWC is ewc)


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def is_dtensor(t) -> bool:
    return isinstance(t, _dtensor())


def _fsdp_module():
    from torch.distributed.fsdp import FSDPModule

    return FSDPModule


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or the model a PEFT wrapper holds) was given to ``fully_shard`` (every
    process must join its forwards)."""
    FSDPModule = _fsdp_module()
    return any(isinstance(m, FSDPModule) for m in model.modules())


def model_class(model: torch.nn.Module) -> type:
    """The model's own class: ``fully_shard`` swaps it for a subclass (``FSDPLlamaForCausalLM``)."""
    FSDPModule, cls = _fsdp_module(), type(model)
    if issubclass(cls, FSDPModule):
        return next(b for b in cls.__bases__ if not issubclass(b, FSDPModule))
    return cls


def reshard(model: torch.nn.Module) -> torch.nn.Module:
    """Every FSDP group back to its shards. A forward without a backward (probing, a no-grad
    pass) leaves the root group's weights gathered whole; whatever next reads the parameters
    (a penalty, a checkpoint, a Fisher) must see the DTensor shards. A plain model: nothing."""
    FSDPModule = _fsdp_module()
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
    return model


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor; a plain tensor as it is."""
    return t.to_local() if is_dtensor(t) else t


def full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor whole (an all-gather: every process must call it); a plain tensor as it is."""
    return t.full_tensor() if is_dtensor(t) else t


def all_sum(x: torch.Tensor, sharded: bool, op: str = "sum") -> torch.Tensor:
    """``x`` summed (``op="max"``: the largest) over the processes when ``sharded`` (each holds
    the sum, or max, over its shards); one all-reduce, on the CPU for gloo."""
    if not sharded:
        return x
    import torch.distributed as dist

    t = x.detach().to("cpu" if dist.get_backend() == "gloo" else x.device, torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.to(x.device, x.dtype)


def layer_classes(model: torch.nn.Module) -> set[type]:
    """The model's repeated blocks (transformers' ``_no_split_modules``: the decoder layer)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """``fully_shard`` each decoder layer, then the model (embeddings, final norm and head in the
    root group), in place; returns the model. Needs an initialized process group."""
    from torch.distributed.fsdp import fully_shard

    classes = layer_classes(model)
    if not classes:
        from retain.errors import UserError

        raise UserError(f"--fsdp: {type(model).__name__} names no decoder layer class "
                        "(_no_split_modules), so retain cannot shard it layer by layer")
    for m in list(model.modules()):
        if type(m) in classes:
            fully_shard(m)
    fully_shard(model)
    return model


def set_gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients after this backward (the last micro-batch) or keep them."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)


def to_local_tree(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """(this process's plain tensors, ``{name: global shape}`` of those that were DTensors)."""
    out, shapes = {}, {}
    for k, t in tensors.items():
        if is_dtensor(t):
            shapes[k] = list(t.shape)
        out[k] = local(t)
    return out, shapes


def from_local_tree(tensors: dict[str, torch.Tensor], shapes: dict) -> dict[str, torch.Tensor]:
    """``to_local_tree`` undone: the named shards back as DTensors split along dim 0 over every
    process (the placement ``fully_shard`` gives parameters)."""
    if not shapes:
        return tensors
    from torch.distributed.device_mesh import init_device_mesh
    import torch.distributed as dist
    from torch.distributed.tensor import Shard

    # fully_shard's default mesh: every process, on this process's GPU (set by accelerate) or CPU
    device = (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
              else torch.device("cpu"))
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    DTensor = _dtensor()
    out = {}
    for k, t in tensors.items():
        if k in shapes:
            shape = torch.Size(shapes[k])
            out[k] = DTensor.from_local(t.to(device), mesh, [Shard(0)], shape=shape,
                                        stride=torch.empty(shape, device="meta").stride(),
                                        run_check=False)
        else:
            out[k] = t
    return out


def full_tree(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor whole (``full``; every process must call it when any is a DTensor)."""
    return {k: full(t) for k, t in tensors.items()}


def shard_like(tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Whole tensors named like ``model``'s parameters (a Fisher read from a file), laid out as
    those parameters are: each process keeps its shards of the sharded ones."""
    params = dict(reshard(model).named_parameters())
    out = {}
    for k, t in tensors.items():
        p = params.get(k)
        if p is not None and is_dtensor(p) and not is_dtensor(t):
            from torch.distributed.tensor import distribute_tensor

            t = distribute_tensor(t.to(p.device), p.device_mesh, p.placements)
        out[k] = t
    return out


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of a sharded model whole, as plain CPU tensors, on every process
    (one all-gather per tensor); a plain model's state dict as it is."""
    if not is_sharded(model):
        return model.state_dict()
    reshard(model)
    gathered: dict[int, torch.Tensor] = {}  # tied weights (one parameter, two names) stay one
    for v in model.state_dict(keep_vars=True).values():
        if id(v) not in gathered:
            gathered[id(v)] = full(v.detach()).cpu()
    return {k: gathered[id(v)] for k, v in model.state_dict(keep_vars=True).items()}
