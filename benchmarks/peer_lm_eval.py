"""lm-evaluation-harness's side of the probe benchmark: run in the peers' venv (it must not
import retain), it scores the requests of a JSON file with lm-eval's ``HFLM`` and times each call.

    PEERS_PYTHON benchmarks/peer_lm_eval.py REQUESTS_JSON OUT_JSON

REQUESTS_JSON: {"model": dir, "batch_size": int, "dtype": "float32", "add_bos_token": bool,
"reps": int, "loglikelihood": {name: [[context, continuation], ...]},
"generate": [[context, {"until": [...], "max_gen_toks": int, "do_sample": false}], ...]}.
OUT_JSON: {"lm_eval": version, "ll_s": {name: [...]}, "ll": {name: [[logprob, is_greedy], ...]},
"gen_s": [...], "gen": [text, ...]} -- each call timed alone (the model is loaded before).
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import time


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=spec["model"], dtype=spec["dtype"], batch_size=spec["batch_size"],
              device="cpu", add_bos_token=spec["add_bos_token"], trust_remote_code=False)
    out: dict = {"lm_eval": importlib.metadata.version("lm_eval"), "ll_s": {}, "ll": {},
                 "gen_s": []}

    def requests(kind: str, args_list: list) -> list:
        return [Instance(request_type=kind, doc={}, arguments=tuple(a), idx=i)
                for i, a in enumerate(args_list)]

    for _ in range(spec["reps"]):
        for name, pairs in (spec.get("loglikelihood") or {}).items():
            reqs = requests("loglikelihood", pairs)
            t = time.perf_counter()
            out["ll"][name] = [list(r) for r in lm.loglikelihood(reqs, disable_tqdm=True)]
            out["ll_s"].setdefault(name, []).append(time.perf_counter() - t)
        if spec.get("generate"):
            reqs = requests("generate_until", spec["generate"])
            t = time.perf_counter()
            out["gen"] = list(lm.generate_until(reqs, disable_tqdm=True))
            out["gen_s"].append(time.perf_counter() - t)
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
