"""The YAML form of a merge: the same inputs as ``retain.merging.merge``, per-model weights,
densities and statistics files included. ``retain merge --config merge.yaml`` reads it.

    method: ties
    base: runs/base
    models:
      - {path: runs/legal, weight: 1.0, density: 0.4}
      - runs/support
    options: {majority_sign: total}
    out: runs/merged
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retain.errors import UserError


class ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    weight: float | None = None
    density: float | None = Field(None, gt=0, le=1)
    fisher: str | None = None  # diagonal Fisher file (method: fisher)
    gram: str | None = None  # Gram matrices file (method: regmean)


class MergeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    base: str | None = None
    models: list[ModelEntry] = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    out: str
    shard_size: int | str = "2GB"
    dtype: Literal["float32", "float16", "bfloat16"] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "MergeConfig":
        """Accept models given as bare paths as well as ``{path: ..., weight: ...}``."""
        data = dict(data)
        data["models"] = [{"path": m} if isinstance(m, str) else m for m in data.get("models", [])]
        try:
            return cls(**data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UserError(f"merge config, {where}: {err['msg']}") from None

    def merge_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``retain.merging.merge`` (besides method, models and out)."""
        kwargs: dict[str, Any] = dict(self.options)
        weights = [m.weight for m in self.models]
        if any(w is not None for w in weights):
            if any(w is None for w in weights):
                raise UserError("merge config: give a weight for every model or for none")
            kwargs["weights"] = weights
        if any(m.density is not None for m in self.models):
            kwargs["densities"] = [m.density for m in self.models]
        for key, attr in (("fisher_files", "fisher"), ("gram_files", "gram")):
            files = [getattr(m, attr) for m in self.models]
            if any(f is not None for f in files):
                if any(f is None for f in files) or key in kwargs:
                    raise UserError(f"merge config: give {attr} for every model (and not in options)")
                kwargs[key] = files
        kwargs.update(base=self.base, shard_size=self.shard_size, dtype=self.dtype)
        return kwargs


def load_merge_config(path: str | Path) -> MergeConfig:
    """Read and validate a merge YAML file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read merge config {path}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"merge config {path} is not a mapping")
    return MergeConfig.from_dict(data)


def merge_from_config(config: MergeConfig | str | Path, *, overwrite: bool = False) -> Path:
    """Run the merge a config describes; returns the output folder."""
    from retain.merging.engine import merge

    if not isinstance(config, MergeConfig):
        config = load_merge_config(config)
    return merge(config.method, [m.path for m in config.models], config.out,
                 overwrite=overwrite, **config.merge_kwargs())
