"""The registry of merge methods: name -> options model, per-tensor function, citation, and how
the method uses the base. Adding a method touches its module and this dict."""

from __future__ import annotations

from retain.merging import (breadcrumbs, dare, della, fisher, linear, model_stock, regmean, slerp,
                            task_arithmetic, ties)
from retain.merging.base import MergeMethod, MergeOptions
from retain.errors import UserError

_DELLA = ("DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based Sampling "
          "(Deep et al., 2024), https://arxiv.org/abs/2406.11617")

MERGE_METHODS: dict[str, MergeMethod] = {
    "linear": MergeMethod(
        "linear", linear.LinearOptions, linear.apply_linear, "template",
        citation="Model soups (Wortsman et al., 2022), https://arxiv.org/abs/2203.05482"),
    "wise_ft": MergeMethod(
        "wise_ft", linear.WiseFtOptions, linear.apply_wise_ft, "pair",
        citation="Robust fine-tuning of zero-shot models (Wortsman et al., 2022), "
                 "https://arxiv.org/abs/2109.01903"),
    "task_arithmetic": MergeMethod(
        "task_arithmetic", task_arithmetic.TaskArithmeticOptions, task_arithmetic.apply,
        "required", citation="Editing Models with Task Arithmetic (Ilharco et al., 2023), "
                             "https://arxiv.org/abs/2212.04089"),
    "ties": MergeMethod(
        "ties", ties.TiesOptions, ties.apply, "required", prepare=ties.prepare,
        citation="TIES-Merging: Resolving Interference When Merging Models (Yadav et al., 2023), "
                 "https://arxiv.org/abs/2306.01708"),
    "dare_linear": MergeMethod(
        "dare_linear", dare.DareLinearOptions, dare.apply_linear, "required",
        citation="Language Models are Super Mario (Yu et al., 2024), "
                 "https://arxiv.org/abs/2311.03099"),
    "dare_ties": MergeMethod(
        "dare_ties", dare.DareTiesOptions, dare.apply_ties, "required",
        citation="Language Models are Super Mario (Yu et al., 2024), "
                 "https://arxiv.org/abs/2311.03099; TIES (Yadav et al., 2023)"),
    "breadcrumbs": MergeMethod(
        "breadcrumbs", breadcrumbs.BreadcrumbsOptions, breadcrumbs.apply, "required",
        prepare=breadcrumbs.prepare,
        citation="Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks "
                 "(Davari & Belilovsky, 2023), https://arxiv.org/abs/2312.06795"),
    "breadcrumbs_ties": MergeMethod(
        "breadcrumbs_ties", breadcrumbs.BreadcrumbsTiesOptions, breadcrumbs.apply_ties,
        "required", prepare=breadcrumbs.prepare,
        citation="Model Breadcrumbs (Davari & Belilovsky, 2023), "
                 "https://arxiv.org/abs/2312.06795; TIES (Yadav et al., 2023)"),
    "della": MergeMethod("della", della.DellaOptions, della.apply_ties, "required",
                         citation=f"{_DELLA}; TIES (Yadav et al., 2023)"),
    "della_linear": MergeMethod("della_linear", della.DellaLinearOptions, della.apply_linear,
                                "required", citation=_DELLA),
    "model_stock": MergeMethod(
        "model_stock", model_stock.ModelStockOptions, model_stock.apply, "required",
        prepare=model_stock.prepare, min_models=2,
        citation="Model Stock: All we need is just a few fine-tuned models "
                 "(Jang, Yun & Han, 2024), https://arxiv.org/abs/2403.19522"),
    "slerp": MergeMethod(
        "slerp", slerp.SlerpOptions, slerp.apply, "pair", prepare=slerp.prepare,
        citation="Animating rotation with quaternion curves (Shoemake, 1985), "
                 "https://doi.org/10.1145/325165.325242"),
    "fisher": MergeMethod(
        "fisher", fisher.FisherOptions, fisher.apply, "template", stats="fisher",
        citation="Merging Models with Fisher-Weighted Averaging (Matena & Raffel, 2022), "
                 "https://arxiv.org/abs/2111.09832"),
    "regmean": MergeMethod(
        "regmean", regmean.RegMeanOptions, regmean.apply, "template", stats="gram",
        citation="Dataless Knowledge Fusion by Merging Weights of Language Models "
                 "(Jin et al., 2023), https://arxiv.org/abs/2212.09849"),
}


def get_method(name: str) -> MergeMethod:
    """The registry entry, or a UserError listing the known names."""
    try:
        return MERGE_METHODS[name]
    except KeyError:
        raise UserError(f"unknown merge method {name!r}; known: {', '.join(MERGE_METHODS)}") from None


def parse_options(method: MergeMethod, options: dict) -> MergeOptions:
    """Validate options against the method's pydantic model; the first problem as one line."""
    from pydantic import ValidationError

    try:
        return method.options(**options)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        if err["type"] == "extra_forbidden":
            known = ", ".join(method.options.model_fields) or "none"
            raise UserError(f"merge method {method.name!r} has no option {where!r} "
                            f"(its options: {known})") from None
        raise UserError(f"merge method {method.name!r}, option {where!r}: {err['msg']}") from None
