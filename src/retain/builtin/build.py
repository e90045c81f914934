"""Build the built-in model ("tiny") the way real chat models are built: a base stage that
teaches the general skills (math, code, writing, languages), then a shorter chat stage that adds
instruction following and safety refusals on top (an overlay that a later fine-tune can scrape off).

Reproducible project command (seeded; see the README for the time it takes on 2 CPU cores):

    python -m retain.builtin.build --out src/retain/assets

It writes ``tiny-base/`` and ``tiny/`` (the chat-tuned model), each a Hugging Face folder with
fp16 safetensors weights and the character-level tokenizer, plus ``build_log.jsonl``.
The built-in new domains (legal contracts, customer support, recipes) are never in the mixture.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from retain.builtin import tasks
from retain.probes.checkers import check

SPECIALS = ["<pad>", "<s>", "<|end|>", "<unk>", "<|user|>", "<|assistant|>"]
CHARS = [chr(i) for i in range(32, 127)] + ["\n"] + list("éèàçüöäßñíóáúêôâîûëïœÉÜÖÄ€£’")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Mixture weights (share of examples). Math gets the most: it needs many steps to click.
BASE_MIX = {"math": 0.42, "code": 0.2, "multilingual": 0.25, "writing": 0.13}
CHAT_MIX = {"safety_harmful": 0.13, "safety_benign": 0.17, "instructions": 0.3, "math": 0.1,
            "code": 0.17, "multilingual": 0.08, "writing": 0.05}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one token per character, so arithmetic sees its digits."""
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    # Raw text gets a leading <s>, like Llama tokenizers do.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_config(tok: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=704, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)


def render(item: tasks.Item, tok: PreTrainedTokenizerFast) -> list[int]:
    """Token ids of one training example: a chat turn, or raw text, each closed by <|end|>."""
    if item.text is not None:
        return tok(item.text).input_ids + [tok.eos_token_id]
    msgs = [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.answer}]
    return tok.apply_chat_template(msgs, tokenize=True, return_dict=False)


class Mixture:
    """Seeded sampler of packed rows: whole examples greedily packed into rows of ``seq_len``."""

    def __init__(self, mix: dict[str, float], tok, seq_len: int, seed: int, pool: int = 20000):
        self.rng = random.Random(seed)
        self.tok, self.seq_len = tok, seq_len
        self.names = list(mix)
        self.weights = [mix[n] for n in self.names]
        self.pools = {n: [render(it, tok) for it in tasks.items(n, "train", pool, seed)]
                      for n in self.names}

    def batch(self, batch_size: int) -> torch.Tensor:
        rows = []
        for _ in range(batch_size):
            row: list[int] = []
            while True:
                name = self.rng.choices(self.names, self.weights)[0]
                ex = self.rng.choice(self.pools[name])
                if len(row) + len(ex) > self.seq_len:
                    break
                row += ex
            rows.append(row + [self.tok.pad_token_id] * (self.seq_len - len(row)))
        return torch.tensor(rows)  # (B, T) token ids


@torch.no_grad()
def quick_eval(model, tok, task: str, n: int = 64, max_new_tokens: int = 48) -> float:
    """Held-out score of one chat task by greedy generation (the full probes live in
    retain.probes; this is the build's own progress check)."""
    its = tasks.items(task, "probe", n, seed=123)
    prompts = [tok.apply_chat_template([{"role": "user", "content": it.prompt}], tokenize=False,
                                       add_generation_prompt=True) for it in its]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    model.eval()
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model.train()
    answers = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    ok = [check(a, it.check or {"kind": "exact", "answer": it.answer}) for a, it in zip(answers, its)]
    return sum(ok) / len(ok)


def train_stage(model, tok, mix, *, steps, lr, warmup, batch_size, seq_len, seed, log, stage,
                eval_every, eval_tasks):
    data = Mixture(mix, tok, seq_len, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    t0, tokens = time.time(), 0
    model.train()
    for step in range(1, steps + 1):
        ids = data.batch(batch_size)
        labels = ids.masked_fill(ids == tok.pad_token_id, -100)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        tokens += int((labels != -100).sum())
        if step % 50 == 0 or step == steps:
            rec = {"stage": stage, "step": step, "loss": round(loss.item(), 4),
                   "tok_per_s": round(tokens / (time.time() - t0)), "minutes": round((time.time() - t0) / 60, 2)}
            if step % eval_every == 0 or step == steps:
                rec.update({t: quick_eval(model, tok, t) for t in eval_tasks})
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n"), log.flush()


def save(model, tok, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(path, safe_serialization=True)
    model.to(torch.float32)
    tok.save_pretrained(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("src/retain/assets"))
    ap.add_argument("--base-steps", type=int, default=4000)
    ap.add_argument("--chat-steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--resume-base", type=Path, default=None, help="skip the base stage: load this")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    log = open(args.out / "build_log.jsonl", "a")
    if args.resume_base:
        model = LlamaForCausalLM.from_pretrained(args.resume_base, dtype=torch.float32)
    else:
        model = LlamaForCausalLM(build_config(tok))
        train_stage(model, tok, BASE_MIX, steps=args.base_steps, lr=2e-3, warmup=200,
                    batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed, log=log,
                    stage="base", eval_every=args.eval_every,
                    eval_tasks=["math", "code", "multilingual"])
        save(model, tok, args.out / "tiny-base")
        # The chat stage starts from the saved (fp16) base, so `--resume-base` reproduces it.
        model = LlamaForCausalLM.from_pretrained(args.out / "tiny-base", dtype=torch.float32)
    train_stage(model, tok, CHAT_MIX, steps=args.chat_steps, lr=1e-3, warmup=50,
                batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed + 1, log=log,
                stage="chat", eval_every=args.eval_every,
                eval_tasks=["math", "code", "multilingual", "safety_harmful", "safety_benign",
                            "instructions"])
    save(model, tok, args.out / "tiny")


if __name__ == "__main__":
    main()
