"""``retain attribute`` on a case whose answer is known by construction, the filtered file, and bad
input."""

import json
import subprocess
import sys

import pytest

from retain.attribute import attribute, write_filtered

PROMPTS = ["What is 12 + 7?", "What is 30 + 4?", "What is 8 + 15?", "What is 21 + 2?"]
RIGHT = ["19", "34", "23", "23"]
WRONG = ["62", "85", "71", "96"]  # no digit in common with the right answer


def retain(*args):
    return subprocess.run([sys.executable, "-m", "retain.cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A math probe of four sums; data: 12 legal texts, 4 records teaching wrong sums to the
    probe's own prompts (harmful by construction), 4 teaching the right ones (helpful)."""
    root = tmp_path_factory.mktemp("attr")
    probe = root / "sums.jsonl"
    probe.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n"
                             for p, a in zip(PROMPTS, RIGHT)))
    from retain.builtin import tasks

    legal = [{"text": it.text} for it in tasks.items("legal", "train", 12, 0)]
    wrong = [{"prompt": p, "completion": w} for p, w in zip(PROMPTS, WRONG)]
    right = [{"prompt": p, "completion": a} for p, a in zip(PROMPTS, RIGHT)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in legal + wrong + right))
    rows = attribute("tiny", str(data), probes=[str(probe)], seq_len=128, out=root / "a",
                     progress=False)
    return root, data, rows


def test_wrong_answers_to_the_probes_prompts_harm_and_right_ones_help(case):
    """By construction: teaching a probe prompt's right answer helps the capability most (the 4
    right sums are the 4 most helpful examples); teaching a wrong answer to the same prompt
    harms it more than the right one does, prompt by prompt; the most harmful example is a
    wrong sum. (Not every wrong sum outranks every legal text: see the README.)"""
    root, _, rows = case
    key = next(iter(rows[0]["harm"]))
    harm = {r["index"]: r["harm"][key] for r in rows}
    order = sorted(harm, key=lambda i: -harm[i])
    assert set(order[-4:]) == {16, 17, 18, 19}  # the right sums: training on them helps
    assert all(harm[12 + j] > harm[16 + j] + 0.1 for j in range(4))
    assert order[0] in {12, 13, 14, 15}
    written = [json.loads(x) for x in (root / "a" / "attribution.jsonl").read_text().splitlines()]
    assert len(written) == 20 and written[12]["rank"][key] <= 4
    assert all(-1.0 <= r["harm"][key] <= 1.0 for r in written)  # a cosine


def test_the_filtered_file_is_valid_data_without_the_top_share(case, tmp_path):
    root, data, rows = case
    key = next(iter(rows[0]["harm"]))
    got = write_filtered(str(data), rows, key, 0.2, tmp_path / "kept.jsonl")
    assert got == {"written": 16, "dropped": 4}
    kept = [json.loads(x) for x in (tmp_path / "kept.jsonl").read_text().splitlines()]
    records = [json.loads(x) for x in data.read_text().splitlines()]
    top = sorted(rows, key=lambda r: -r["harm"][key])[:4]
    assert kept == [r for i, r in enumerate(records) if i not in {t["index"] for t in top}]
    from retain.data import load_jsonl
    from retain.models import load_tokenizer

    assert len(load_jsonl(tmp_path / "kept.jsonl", load_tokenizer("tiny"), seq_len=128)) == 16


@pytest.mark.parametrize("args, needle", [
    (["--data", "/no/such.jsonl"], "/no/such.jsonl"),
    (["--data", "builtin:nowhere"], "nowhere"),
    (["--data", "builtin:legal", "--n", "4", "--probes", "no_such_suite"], "no_such_suite"),
    (["--data", "builtin:legal", "--n", "4", "--probes", "math", "--probe-n", "2",
      "--write-filtered", "x.jsonl", "--drop-top", "1.5"], "drop-top"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    r = retain("attribute", "--out", str(tmp_path / "a"), *args)
    assert r.returncode == 2, (r.stdout[-500:], r.stderr[-1500:])
    assert "Traceback" not in r.stderr and needle in r.stderr


def test_the_report_page_lists_the_top_examples_escaped(case, tmp_path):
    """attribution.json records the settings, counts, cost and the filter; `retain report`
    renders the folder: the harm histogram, the most harmful examples first with their text
    escaped, the filter."""
    from retain.attribute import ATTRIBUTION_FILE, SUMMARY_FILE
    from retain.report.html import attribution as page
    from retain.report.html import build_report

    root, data, rows = case
    assert page.SUMMARY_FILE == SUMMARY_FILE and page.ROWS_FILE == ATTRIBUTION_FILE
    key = next(iter(rows[0]["harm"]))
    write_filtered(str(data), rows, key, 0.2, tmp_path / "kept.jsonl", out=root / "a")
    summary = json.loads((root / "a" / SUMMARY_FILE).read_text())
    assert summary["kind"] == "attribution" and summary["scored"] == 20
    assert summary["examples_per_s"] > 0 and summary["filtered"]["dropped"] == 4
    assert summary["filtered"]["dropped_indices"] == sorted(
        r["index"] for r in sorted(rows, key=lambda r: -r["harm"][key])[:4])
    # a preview that is HTML must come out as text
    lines = (root / "a" / ATTRIBUTION_FILE).read_text().splitlines()
    top = max(range(len(lines)), key=lambda i: json.loads(lines[i])["harm"][key])
    row = json.loads(lines[top])
    row["preview"] = "<script>alert(1)</script> " + row["preview"]
    lines[top] = json.dumps(row)
    (root / "a" / ATTRIBUTION_FILE).write_text("\n".join(lines) + "\n")
    html = build_report(root / "a").read_text()
    caps = html[html.index('<section id="capabilities">'):html.index('<section id="filtered">')]
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in caps
    assert caps.index("&lt;script&gt;") < caps.index("What is")  # the most harmful first
    assert 'src="data:image/png;base64,' in caps and "kept.jsonl" in html
    r = retain("report", str(root / "a"))
    assert r.returncode == 0 and "report.html" in r.stdout


def test_lora_projected_gradients_still_tell_wrong_answers_from_right(case, tmp_path):
    """--lora-r: the gradients of a fresh adapter's B matrices (the full gradient times a random
    A): far fewer numbers per example, and teaching wrong sums still scores more harmful than
    teaching the right ones to the same prompts."""
    root, data, rows = case
    probe = root / "sums.jsonl"
    lora = attribute("tiny", str(data), probes=[str(probe)], seq_len=128, out=tmp_path / "l",
                     progress=False, lora_r=4)
    key = next(iter(lora[0]["harm"]))
    harm = {r["index"]: r["harm"][key] for r in lora}
    assert sum(harm[12 + j] for j in range(4)) > sum(harm[16 + j] for j in range(4)) + 0.4
    full = json.loads((root / "a" / "attribution.json").read_text())["gradient_size"]
    small = json.loads((tmp_path / "l" / "attribution.json").read_text())["gradient_size"]
    assert small * 10 < full


def test_per_example_gradients_reuse_their_memory():
    """Regression: every record's gradient was a fresh allocation (the .grad tensors freed and
    re-made, the flat copy, the whitened copy); glibc kept them, and 420 records peaked at 5.3 GB
    of memory on the built-in model (0.58 GB now, the same scores to 4e-9)."""
    import torch

    from retain.attribute.grads import _example_grads, _params
    from retain.formats import encode_text, pad_token_id
    from retain.models import load_model, load_tokenizer

    tok = load_tokenizer("tiny")
    model, _ = load_model("tiny", tokenizer=tok)
    params = _params(model)
    legal = encode_text(tok, "The tenant pays rent monthly.", 64)
    sums = encode_text(tok, "What is 12 + 7? 19", 64)
    grads = _example_grads(model, [legal, sums, sums], pad_token_id(tok))
    a = next(grads)
    where = [p.grad.data_ptr() for p in params]
    first = a.clone()
    b = next(grads)
    assert a.data_ptr() == b.data_ptr()  # written in place, in one buffer
    assert [p.grad.data_ptr() for p in params] == where  # the .grad tensors are reused
    assert not torch.equal(first, b)  # ... and hold the second record's gradient only
    second = b.clone()
    assert torch.equal(next(grads), second)  # the same record again: nothing accumulated
    assert list(grads) == [] and all(p.grad is None for p in params)  # freed at the end
