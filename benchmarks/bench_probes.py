"""Probes against lm-evaluation-harness on the same items, model, precision and batch size:
multiple choice by log-likelihood and greedy generation; the time of each call, and whether the
two agree item by item.

Items: multiple-choice arithmetic built from the built-in math task's held-out items (the right
answer and three near misses, shuffled, seeded), and the built-in chat probes that answer by
greedy generation (math, code, multilingual, safety, instructions). Model: the built-in one,
float32 on the CPU in both tools (lm-eval's default dtype would run its float16 checkpoint in
float16). Conventions made equal, which decide whether scores agree:
- prompts are the model's chat template, rendered by retain and handed to lm-eval as the context
  string; the template writes the BOS, so lm-eval runs with ``add_bos_token=False`` (retain drops
  a doubled BOS itself);
- a choice is the continuation as written, with no target delimiter added (lm-eval tasks put
  ``target_delimiter`` -- a space by default -- between context and choice; here the context ends
  the assistant tag and the choice follows it directly in both tools);
- generation stops at EOS and at retain's stop strings (``until`` in lm-eval), greedy, with the
  budget retain gives each probe (``max_gen_toks``).
Batch: lm-eval's batch of 16 is 16 (prompt, choice) requests a forward; retain scores a prompt
once and shares its KV cache among the choices, so its batch of 16 is 16 prompts (one forward
of the 16 prompts, one of their 64 choices, a few tokens each). The second multiple-choice row
runs retain at 4 prompts a batch (16 choices: lm-eval's rows a forward), for comparison.
Each tool is timed inside its own process around the call alone (model loaded before), the
same number of repetitions; lm-eval runs in the peers' venv (``peers.py``).

    python benchmarks/bench_probes.py ARGS_JSON OUT_JSON   (run by bench.py)
"""

from __future__ import annotations

import json
import random
import subprocess
import time

from bench_common import ROOT, SectionArgs, check_row, figure, section_main

BATCH = 16


def mc_items(n: int, seed: int = 0, shots: int = 0):
    """``n`` arithmetic questions, four choices each (the answer and three near misses), with
    ``shots`` solved questions of the same task before each (in the user turn, seeded)."""
    from retain.probes.kinds import ChoiceItem
    from retain.probes.suites import probe_items

    rng = random.Random(seed)
    pool = probe_items("math", n + 50, seed)
    out = []
    for j, it in enumerate(pool[:n]):
        a = int(it.answer)
        wrong = rng.sample([d for d in range(-12, 13) if d and a + d >= 0], 3)
        choices = [str(a)] + [str(a + d) for d in wrong]
        rng.shuffle(choices)
        shown = rng.sample([x for i, x in enumerate(pool) if i != j], shots)
        prompt = "".join(f"{x.prompt}\n{x.answer}\n\n" for x in shown) + it.prompt
        out.append(ChoiceItem(prompt=prompt, choices=tuple(choices),
                              label=choices.index(str(a)), key=it.key))
    return out


def gen_probes(n: int):
    from retain.probes import load_probes
    from retain.probes.kinds import GenerationProbe

    probes = load_probes(["math", "code", "multilingual", "safety", "instructions"], n=n, seed=0)
    return [p for p in probes if isinstance(p, GenerationProbe)]


def measure_probe_pass(model, tok, n: int) -> dict:
    """The default probe pass (the retained suites and the legal domain, ``n`` items each) once,
    counting what goes through the model: tokens of prefill and scoring forwards (padding
    included), decoding steps and generated rows; the input of the scaling section."""
    import copy

    from retain.probes import evaluate, load_probes

    probes = load_probes(["retained", "legal"], n=n, seed=0)
    base = copy.deepcopy(model)
    count = {"scored_tokens": 0, "decode_steps": 0, "decode_rows": 0, "forwards": 0}

    def hook(_module, args, kwargs):
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        b, t = x.shape[:2]
        count["forwards"] += 1
        if t == 1:
            count["decode_steps"] += 1
            count["decode_rows"] += b
        else:
            count["scored_tokens"] += b * t

    hooks = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in (model, base)]
    t = time.perf_counter()
    evaluate(model, tok, probes, base_model=base, batch_size=64, progress=False)
    seconds = time.perf_counter() - t
    for h in hooks:
        h.remove()
    return {"items": sum(len(p) for p in probes), "seconds": seconds, **count}


class _IdTokenizer:
    """What ``engine.generate`` asks of a tokenizer, over bare ids (the long-answer row's model
    has no text vocabulary): pad 0, BOS 1, EOS 2; an answer's text is its ids."""
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    chat_template = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i < 3))

    def convert_tokens_to_ids(self, _token):
        return None


def long_answers(reps: int, quick: bool) -> list[dict]:
    """Greedy answers of ``LONG_NEW`` tokens: retain's slot decoding (its key/value cache written
    in place) against ``model.generate`` (HF's cache grown by concatenation every step) on the
    same 16 prompts, one batch, a randomly initialized Llama of the built-in one's width with a
    4,096-token vocabulary (so that answers seldom end early). Same ids checked."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from retain.probes import engine

    new_tokens = 200 if quick else 600
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                      num_attention_heads=8, vocab_size=4096, max_position_embeddings=1024,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    tok = _IdTokenizer()
    gen = torch.Generator().manual_seed(1)
    prompts = [[1] + torch.randint(3, 4096, (int(n),), generator=gen).tolist()
               for n in torch.randint(20, 80, (BATCH,), generator=gen)]
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=new_tokens,
                              use_cache=True, pad_token_id=0, eos_token_id=2)
    ours, theirs, same = [], [], 0
    for _ in range(reps):
        t = time.perf_counter()
        got = engine.generate(model, tok, prompts, max_new_tokens=new_tokens,
                              batch_size=BATCH, stop_strings=())
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            ids, mask = engine.pad_batch(prompts, 0, side="left")
            rows = model.generate(input_ids=ids, attention_mask=mask,
                                  generation_config=config)[:, ids.shape[1]:].tolist()
        theirs.append(time.perf_counter() - t)
        want = [tok.decode(r[:r.index(2)] if 2 in r else r) for r in rows]
        same = sum(a == b for a, b in zip(got, want))
    name = f"greedy generation, long answers ({BATCH} prompts x {new_tokens} new tokens)"
    return [figure(name, "s", ours, theirs, baseline=f"transformers model.generate, batch {BATCH}"),
            check_row(f"{name}: same answers", same == BATCH,
                      f"{same}/{BATCH} answers identical")]


def main(args: SectionArgs) -> dict:
    import torch

    from retain.models import load_model
    from retain import formats
    from retain.probes import engine
    from retain.probes.kinds import ChoiceProbe
    from retain.models import _resolve_source  # a name like "tiny" -> the model's folder

    n_mc, n_gen = (200, 24) if args.quick else (1000, 100)
    torch.manual_seed(0)
    model, tok = load_model("tiny", dtype="float32", device="cpu")
    mcs = {f"{k}-shot": ChoiceProbe("mc", mc_items(n_mc, shots=k), "math") for k in (0, 5)}
    n_mc = len(mcs["0-shot"])  # the math task's distinct held-out items may be fewer than asked
    gens = gen_probes(n_gen)
    fmt = lambda p, prompt: formats.format_prompt(tok, prompt, p.chat)  # noqa: E731

    # retain, in this process: each multiple-choice set at 16 prompts a batch and at 4 (16
    # choices: lm-eval's rows a forward), then the generation
    ours = {name: {"prompts": [], "rows": []} for name in mcs}
    ours_gen, scores, answers = [], {}, None
    for _ in range(args.reps):
        for name, mc in mcs.items():
            for key, bs in (("prompts", BATCH), ("rows", BATCH // 4)):
                t = time.perf_counter()
                scores[name] = mc.choice_scores(model, tok, range(len(mc)), batch_size=bs)
                ours[name][key].append(time.perf_counter() - t)
        t = time.perf_counter()
        answers = []
        for p in gens:
            prompts = [formats.encode(tok, fmt(p, it.prompt)) for it in p.items]
            answers += engine.generate(model, tok, prompts, max_new_tokens=p.budget(tok),
                                       batch_size=BATCH)
        ours_gen.append(time.perf_counter() - t)

    probe_pass = measure_probe_pass(model, tok, 24 if args.quick else 100)
    long_rows = long_answers(args.reps, args.quick)
    ctx_tokens = {name: round(sum(len(formats.encode(tok, fmt(mc, it.prompt))) for it in mc.items)
                              / len(mc)) for name, mc in mcs.items()}
    config = {"batch_size": BATCH, "dtype": "float32", "mc_items": n_mc,
              "mean_context_tokens": ctx_tokens, "add_bos_token": False, "probe_pass": probe_pass}
    if args.peers_python is None:
        return {"figures": [figure(f"multiple choice {n}, {n_mc} items", "s", o["prompts"])
                            for n, o in ours.items()]
                + [figure(f"greedy generation, {sum(map(len, gens))} prompts", "s", ours_gen)]
                + long_rows,
                "notes": ["lm-eval not installed (no peers venv): retain's times only"],
                "config": config}
    # lm-eval, in the peers' venv, on the same requests
    spec = {"model": _resolve_source("tiny"), "batch_size": BATCH, "dtype": "float32",
            "add_bos_token": False, "reps": args.reps,
            "loglikelihood": {name: [[fmt(mc, it.prompt), c] for it in mc.items
                                     for c in it.choices] for name, mc in mcs.items()},
            "generate": [[fmt(p, it.prompt), {"until": list(engine.STOP_STRINGS),
                                              "max_gen_toks": p.budget(tok), "do_sample": False}]
                         for p in gens for it in p.items]}
    req, res = args.work / "lm_eval_requests.json", args.work / "lm_eval_out.json"
    req.write_text(json.dumps(spec))
    proc = subprocess.run([args.peers_python, str(ROOT / "benchmarks" / "peer_lm_eval.py"),
                           str(req), str(res)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"lm-eval failed:\n{proc.stderr[-3000:]}")
    theirs = json.loads(res.read_text())
    peer = f"lm-eval {theirs['lm_eval']}, batch {BATCH} requests"

    figures = []
    for name, mc in mcs.items():
        # agreement: the predicted choice of every item, and the log-likelihoods
        ll = [x[0] for x in theirs["ll"][name]]
        k, same, max_diff, ours_acc, their_acc = 0, 0, 0.0, 0, 0
        for it, s in zip(mc.items, scores[name]):
            t = ll[k:k + len(it.choices)]
            k += len(it.choices)
            po, pt = max(range(len(s)), key=s.__getitem__), max(range(len(t)), key=t.__getitem__)
            same += po == pt
            ours_acc += po == it.label
            their_acc += pt == it.label
            max_diff = max(max_diff, max(abs(a - b) for a, b in zip(s, t)))
        label = (f"multiple choice {name}, {n_mc} items x 4 choices "
                 f"(~{ctx_tokens[name]} context tokens)")
        figures += [
            figure(f"{label}, batch {BATCH} prompts", "s", ours[name]["prompts"],
                   theirs["ll_s"][name], baseline=peer, target=2.0,
                   target_text="at least 2x faster"),
            figure(f"{label}, batch {BATCH // 4} prompts ({BATCH} choices)", "s",
                   ours[name]["rows"], theirs["ll_s"][name], baseline=peer),
            check_row(f"{label}: same predicted choice", same == n_mc,
                      f"{same}/{n_mc} items; accuracy {ours_acc / n_mc:.3f} (retain) vs "
                      f"{their_acc / n_mc:.3f} (lm-eval); max |log-likelihood difference| "
                      f"{max_diff:.1e} nats"),
        ]
    same_text = sum(a == b for a, b in zip(answers, theirs["gen"]))
    n_prompts = len(answers)
    gen_name = f"greedy generation, {n_prompts} chat prompts (5 probes)"
    figures += [
        figure(gen_name, "s", ours_gen, theirs["gen_s"], baseline=peer, target=2.0,
               target_text="at least 2x faster"),
        check_row(f"{gen_name}: same answer text", same_text == n_prompts,
                  f"{same_text}/{n_prompts} answers identical"),
    ]
    config["gen_prompts"] = n_prompts
    return {"figures": figures + long_rows, "config": config}


if __name__ == "__main__":
    section_main(main)
