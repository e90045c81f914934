"""`retain merge --base tiny`: the built-in model names resolve to the shipped folders, as they do
everywhere else a model is asked for."""

from retain.merging import merge
from retain.merging.sources import FolderSource
from retain.models import BUILTIN_MODELS


def test_builtin_names_resolve_to_the_shipped_folders():
    assert FolderSource("tiny").path == BUILTIN_MODELS["tiny"]
    assert FolderSource("tiny-base").path == BUILTIN_MODELS["tiny-base"]


def test_wise_ft_between_the_two_builtin_stages(tmp_path):
    from safetensors import safe_open

    out = merge("wise_ft", ["tiny"], tmp_path / "m", base="tiny-base", alpha=0.0)
    files = sorted(out.glob("*.safetensors"))
    base = BUILTIN_MODELS["tiny-base"] / "model.safetensors"
    with safe_open(files[0], "pt") as merged, safe_open(base, "pt") as ref:
        name = next(iter(ref.keys()))
        assert (merged.get_tensor(name).float() == ref.get_tensor(name).float()).all()  # alpha 0
