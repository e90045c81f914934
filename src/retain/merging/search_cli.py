"""``retain merge --search``: score a grid of merge coefficients between a base and its fine-tune(s)
on the probes, in memory (one model object, weights copied in per point, nothing written per
point), print the curve, write ``curve.png`` and ``search.json``, and pick the coefficient that
keeps the most retained capability for a stated share of the new-domain gain. With ``soup``,
several fine-tunes are first combined by greedy soup (Wortsman et al., 2022,
https://arxiv.org/abs/2203.05482) and the curve runs from the base to the soup.

Every probe is split into a selection part and a reporting part that share no item
(``retain.probe_set.split_selection``, seeded): the curve, the soup and the pick are scored on the
selection part, and the base, the fine-tune and the picked point are then scored again on the
reporting part (``record["reported"]``), so the numbers reported for the pick are not the ones it
was chosen on (a maximum over a grid, read on the same items, is biased upwards).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from retain.errors import UserError

SEARCH_FILE, CURVE_FILE = "search.json", "curve.png"


CE = "ce_nats_per_token"


def probe_scores(model, tok, probes, *, batch_size: int = 32, base_model=None,
                 keep: Sequence[str] = ()) -> dict[str, float]:
    """``probe.metric`` -> score for every proportion metric, oriented so that higher is better
    (over_refusal_rate -> 1 - x); cross-entropy metrics have no common scale and are left out,
    except the keys in ``keep`` (the new domain's, scored as minus the cross-entropy, so that
    its gain is the fall of the cross-entropy in nats per token)."""
    from retain.probes import evaluate
    from retain.report.plots import PROPORTION_METRICS, oriented

    results = evaluate(model, tok, probes, base_model=base_model, batch_size=batch_size,
                       progress=False)
    scores = {r.key: oriented(r.metric, float(r.value)) for r in results
              if r.metric in PROPORTION_METRICS}
    scores.update({r.key: -float(r.value) for r in results if r.key in keep})
    return scores


def domain_key(probes, domain: str, metric: str = "accuracy") -> str:
    """The score name of the new domain: its proportion metric (``legal.accuracy``) or, with
    ``metric="ce"``, its cross-entropy (``legal.ce_nats_per_token``, scored negated)."""
    from retain.report.plots import PROPORTION_METRICS

    for p in probes:
        if p.name != domain or p.capability != "domain":
            continue
        if (p.metric == CE) if metric == "ce" else (p.metric in PROPORTION_METRICS):
            return f"{p.name}.{p.metric}"
    what = "cross-entropy" if metric == "ce" else "proportion metric (accuracy)"
    raise UserError(f"no {what} of the new domain {domain!r} among the probes (add it to "
                    f"--probes, or pick --domain-metric {'accuracy' if metric == 'ce' else 'ce'})")


def domain_probes_of(domain: str, n: int | None, seed: int) -> tuple[str, list]:
    """``--domain``: a built-in suite's name (its probes come with --probes), or the user's own
    domain probe file (``retain.probes.jsonl`` shapes): (the name, its probes)."""
    if not (domain.endswith(".jsonl") or Path(domain).is_file()):
        return domain, []
    from retain.probes.domain import domain_probe_files

    return Path(domain).stem, domain_probe_files([domain], n=n, seed=seed)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _load_state(path: str, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from retain.models import load_model

    other, _ = load_model(path, dtype="float32", device="cpu")
    state = _state(other)
    del other
    for name, t in like.items():
        if name not in state:
            raise UserError(f"tensor {name!r} of the base is missing in {path}")
        if state[name].shape != t.shape:
            raise UserError(f"tensor {name!r} has shape {list(state[name].shape)} in {path} "
                            f"but {list(t.shape)} in the base")
    return state


def run_search(base: str, finetunes: Sequence[str], out: str | Path, *,
               probes: Sequence[str] | None = None, domain: str = "legal",
               method: str = "wise_ft", param: str = "scale",
               values: Sequence[float] | None = None, min_gain_share: float = 0.8,
               soup: bool = False, probe_n: int | None = None, seed: int = 0,
               batch_size: int = 32, plot: bool = True, domain_metric: str = "accuracy") -> dict:
    """Score the grid, write ``search.json`` (and ``curve.png``) into ``out``, return the record.

    ``method`` wise_ft: the grid is alpha (0 = base, 1 = fine-tune); any other merge method: the
    grid is its option ``param`` (e.g. ties, scale), merging ``finetunes`` over ``base``."""
    from retain.merging.search import (DEFAULT_ALPHAS, greedy_soup, interpolation_curve,
                                       method_curve, pick_coefficient, plot_curve)
    from retain.models import load_model
    from retain.probes import load_probes
    from retain.report import results as rr

    if not finetunes:
        raise UserError("--search needs a fine-tuned model folder after --base")
    if method == "wise_ft" and len(finetunes) > 1 and not soup:
        raise UserError("wise_ft searches one fine-tune; give --soup to combine several first")
    if not 0 <= min_gain_share <= 1:
        raise UserError(f"--min-gain-share must be in [0, 1], got {min_gain_share}")
    values = list(DEFAULT_ALPHAS if values is None else values)
    if not values:
        raise UserError("--alphas is empty")
    if domain_metric not in ("accuracy", "ce"):
        raise UserError(f"--domain-metric must be accuracy or ce, got {domain_metric!r}")
    domain_file = domain if domain.endswith(".jsonl") or Path(domain).is_file() else None
    domain, own = domain_probes_of(domain, probe_n, seed)
    specs = list(probes) if probes else ["retained"] + ([] if own else [domain])
    probe_list = load_probes(specs, n=probe_n, seed=seed) + own
    new_key = domain_key(probe_list, domain, domain_metric)
    if any(getattr(p, "needs_base", False) or p.kind == "kl_to_base" for p in probe_list):
        raise UserError("divergence probes (drift) are not searched; leave them out of --probes")
    rep_probes, sel_probes, split = _split(probe_list, specs, domain_file, probe_n, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    model, tok = load_model(base, dtype="float32", device="cpu")
    base_state = _state(model)
    ft_states = [_load_state(f, base_state) for f in finetunes]

    def score(m) -> dict[str, float]:  # the selection part: everything that chooses
        return probe_scores(m, tok, sel_probes, batch_size=batch_size, keep=[new_key])

    def report(m) -> dict[str, float]:  # the reporting part: never seen by a choice
        return probe_scores(m, tok, rep_probes, batch_size=batch_size, keep=[new_key])

    base_scores, base_reported = score(model), report(model)
    retained = [k for k in base_scores if k.split(".")[0] != domain]  # the domain's all out
    record: dict = {"base": str(base), "finetunes": [str(f) for f in finetunes],
                    "method": method, "param": "alpha" if method == "wise_ft" else param,
                    "domain": new_key, "domain_metric": domain_metric,
                    "domain_score": ("minus cross-entropy, nats per token" if domain_metric == "ce"
                                     else "proportion"),
                    "retained": retained, "min_gain_share": min_gain_share,
                    "probe_n": probe_n, "seed": seed, "split": split,
                    "scored_on": {"points": "selection", "base_scores": "selection",
                                  "finetune_scores": "selection", "pick": "selection",
                                  "soup": "selection", "reported": "reporting"},
                    "base_scores": base_scores}

    if soup and len(ft_states) > 1:
        def objective(s: dict[str, float]) -> float:  # new domain and retained mean, equally
            kept = sum(s[k] for k in retained) / len(retained) if retained else 0.0
            return (s[new_key] + kept) / 2
        res = greedy_soup(model, ft_states, score, objective)
        ft_states = [_state(model)]  # the model holds the soup
        record["soup"] = {"selected": [str(finetunes[i]) for i in res.selected],
                          "individual": res.individual, "objective": res.objective,
                          "history": [list(h) for h in res.history]}
    if method == "wise_ft":
        ft = ft_states[0]
        points = interpolation_curve(model, base_state, ft, score, values)
        ft_scores = next((p.scores for p in points if p.coefficient == 1.0), None) or score(model)
        ft_reported = report(model)  # the curve leaves the model holding the fine-tune
    else:
        points = method_curve(model, score, method, base_state, ft_states, param, values)
        ft_scores, best = {}, 0
        for i, f in enumerate(ft_states):  # the best single fine-tune: the gain to keep a share of
            model.load_state_dict(f)
            s = score(model)
            if not ft_scores or s[new_key] > ft_scores[new_key]:
                ft_scores, best = s, i
        model.load_state_dict(ft_states[best])  # the one chosen on selection, reported
        ft_reported = report(model)
    record["finetune_scores"] = ft_scores
    pick = pick_coefficient(points, new_key, base_scores, ft_scores,
                            min_gain_share=min_gain_share, retained=retained)

    def kept(s: dict[str, float]) -> float | None:
        return sum(s[k] for k in retained) / len(retained) if retained else None

    record["points"] = [{"coefficient": p.coefficient, "scores": p.scores,
                         "retained_mean": kept(p.scores)} for p in points]
    record["pick"] = {"coefficient": pick.point.coefficient if pick.point else None,
                      "retained_mean": pick.retained, "gain_share": pick.gain_share,
                      "reason": pick.reason}

    def reported(s: dict[str, float]) -> dict:
        full = ft_reported[new_key] - base_reported[new_key]
        return {"scores": s, "retained_mean": kept(s),
                "gain_share": (s[new_key] - base_reported[new_key]) / full if full else None}

    record["reported"] = {"part": "reporting", "base": reported(base_reported),
                          "finetune": reported(ft_reported), "pick": None}
    if pick.point is not None:  # the picked weights again, scored on the reporting part
        c = pick.point.coefficient
        again = (interpolation_curve(model, base_state, ft_states[0], report, [c])
                 if method == "wise_ft" else
                 method_curve(model, report, method, base_state, ft_states, param, [c]))
        record["reported"]["pick"] = {"coefficient": c, **reported(again[0].scores)}
    if plot:
        label = "alpha (0 = base, 1 = fine-tune)" if method == "wise_ft" else f"{method} {param}"
        plot_curve(points, out / CURVE_FILE, new_domain=new_key, xlabel=label)
        record["chart"] = CURVE_FILE
    rr.write_json_atomic(out / SEARCH_FILE, record)
    return record


def _split(probe_list: list, specs: list[str], domain_file: str | None, n: int | None,
           seed: int) -> tuple[list, list, dict]:
    """(reporting probes, selection probes, sizes) of ``probe_list``: the split the guard uses,
    its pool the same specs (and the user's domain file) loaded with twice the items."""
    from retain.probe_set import split_selection
    from retain.probes import load_probes
    from retain.probes.domain import domain_probe_files

    size = n or max((len(p) for p in probe_list), default=60)  # None: each suite's default
    pool = load_probes(specs, n=2 * size, seed=seed) + (
        domain_probe_files([domain_file], n=2 * size, seed=seed) if domain_file else [])
    try:
        return split_selection(probe_list, pool, size, seed)
    except UserError as e:
        raise UserError(f"{e} (merge --search: leave it out of --probes)") from None


def _items(record: dict, part: str) -> str:
    """The items per probe of one part of the split: "40" or "14-100"."""
    sizes = sorted({v[part] for v in record.get("split", {}).values()})
    return "-" if not sizes else str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"


def print_search(record: dict) -> None:
    """The curve as a table (coefficient, new domain, retained mean, each capability) and the pick."""
    from rich.console import Console
    from rich.table import Table

    new_key, retained = record["domain"], record["retained"]
    picked = record["pick"]["coefficient"]
    new_head = f"{new_key} (new{', minus' if record.get('domain_metric') == 'ce' else ''})"
    table = Table(record["param"], new_head, "retained mean", *retained,
                  title=f"{record['method']} search: {record['base']} -> "
                        f"{', '.join(record['finetunes'])}",
                  caption=f"scored on the selection part ({_items(record, 'selection')} items "
                          "per probe): the items the pick is made on")
    for p in record["points"]:
        s = p["scores"]
        mean = "-" if p["retained_mean"] is None else f"{p['retained_mean']:.3f}"
        mark = " *" if picked is not None and p["coefficient"] == picked else ""
        table.add_row(f"{p['coefficient']:g}{mark}", f"{s[new_key]:.3f}", mean,
                      *[f"{s[k]:.3f}" for k in retained])
    console = Console()
    console.print(table)
    if "soup" in record:
        console.print(f"greedy soup kept: {', '.join(record['soup']['selected'])}")
    console.print(f"pick (min gain share {record['min_gain_share']:.0%}): "
                  f"{record['pick']['reason']} (on the selection part)")
    rep = record.get("reported")
    if not rep:
        return
    console.print(f"reported on the held-out reporting part ({_items(record, 'reporting')} items "
                  "per probe, none of them used to choose):")
    for name in ("base", "finetune", "pick"):
        r = rep.get(name)
        if r is None:
            continue
        label = f"pick {record['param']}={r['coefficient']:g}" if name == "pick" else name
        mean = "-" if r["retained_mean"] is None else f"{r['retained_mean']:.3f}"
        share = "" if name != "pick" or r["gain_share"] is None else \
            f", {r['gain_share']:.0%} of the fine-tune's gain"
        console.print(f"  {label}: {new_head} {r['scores'][new_key]:.3f}, "
                      f"retained mean {mean}{share}")
