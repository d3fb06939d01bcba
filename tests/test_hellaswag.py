"""HellaSwag: our batched, padded scoring against build-nanogpt's rule written plainly in
PyTorch, example by example, on a small random GPT-2 built with transformers."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_faults import one_line_error

from mlx_gpt.data.text import load_text
from mlx_gpt.evals.hellaswag import evaluate, read_examples
from mlx_gpt.metrics import read_metrics
from mlx_gpt.runs.folder import RunFolder
from mlx_gpt.tokenizer import BPETokenizer

ROOT = Path(__file__).resolve().parents[1]
torch = pytest.importorskip("torch")


def write_examples(path, n: int = 40, seed: int = 0) -> list[dict]:
    """Lines in hellaswag_val.jsonl's format: ctx, 4 endings, label (and its other keys)."""
    rng = np.random.default_rng(seed)
    # Short lines: context and ending fit the small model's 64 positions uncropped.
    lines = [line for line in load_text().splitlines() if len(line.split()) > 3 and len(line) < 32]
    examples = []
    for i in range(n):
        pick = rng.integers(0, len(lines), 5)
        examples.append({
            "ind": i, "activity_label": "Shakespeare", "ctx_a": lines[pick[0]], "ctx_b": "",
            "ctx": lines[pick[0]], "endings": [lines[p].lower() for p in pick[1:]],
            "label": int(rng.integers(0, 4)), "split": "val", "split_type": "indomain",
            "source_id": f"test~{i}",
        })  # fmt: skip
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return examples


def reference(logits_of, tokenizer, example, chars_extra: int = 0) -> tuple[int, int, int]:
    """build-nanogpt's hellaswag.py: (pred by sum, pred_norm by mean), one example, and
    the Eleuther harness's acc_norm rule on the same losses: the summed log-likelihood
    over the ending's length in characters, the space before it not counted
    (lm_eval/api/task.py: completion_len = len(choice), pred_norm = argmax(lls /
    completion_len)). logits_of(tokens) is the PyTorch model's forward pass."""
    ctx = tokenizer.encode(example["ctx"])
    rows = [ctx + tokenizer.encode(" " + end) for end in example["endings"]]
    masks = [[0] * len(ctx) + [1] * (len(r) - len(ctx)) for r in rows]
    width = max(len(r) for r in rows)
    tokens = torch.zeros((4, width), dtype=torch.long)
    mask = torch.zeros((4, width), dtype=torch.long)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, : len(r)], mask[i, : len(m)] = torch.tensor(r), torch.tensor(m)
    with torch.no_grad():
        logits = logits_of(tokens)
    losses = torch.nn.functional.cross_entropy(
        logits[..., :-1, :].reshape(-1, logits.size(-1)),
        tokens[..., 1:].reshape(-1),
        reduction="none",
    ).view(4, -1)
    shift_mask = mask[..., 1:]
    sum_loss = (losses * shift_mask).sum(dim=1)
    avg_loss = sum_loss / shift_mask.sum(dim=1)
    completion_len = np.array([float(len(end) + chars_extra) for end in example["endings"]])
    by_chars = int(np.argmax(-sum_loss.numpy() / completion_len))
    return sum_loss.argmin().item(), avg_loss.argmin().item(), by_chars


def test_batched_scoring_equals_build_nanogpts_rule(hf_gpt2, imported_gpt2, tmp_path):
    folder, hf_model = hf_gpt2
    examples = write_examples(tmp_path / "hellaswag_val.jsonl")
    # Endings of a word or two beside whole lines, where one character more or less in
    # the length the loss is divided by can change the pick.
    for i, e in enumerate(examples[:20]):
        e["endings"][i % 4] = e["endings"][i % 4].split()[0]
    # The ids are the same either way (the import's own test checks the tokenizer); what
    # is checked here is the scoring: batched, padded and masked against one at a time.
    tokenizer = BPETokenizer.gpt2(str(folder))
    expected = [reference(lambda t: hf_model(t).logits, tokenizer, e) for e in examples]
    # Every other example labelled with the harness's own pick, so that acc_norm_chars
    # counts where a rule one character off would pick another ending.
    for i in range(0, len(examples), 2):
        examples[i]["label"] = expected[i][2]
    lines = "".join(json.dumps(e) + "\n" for e in examples)
    (tmp_path / "hellaswag_val.jsonl").write_text(lines)
    model, tokenizer = RunFolder(imported_gpt2).load_model()
    result = evaluate(
        model, tokenizer, read_examples(tmp_path / "hellaswag_val.jsonl"), batch_examples=6
    )
    labels = [e["label"] for e in examples]

    def right(rule: int, picks=expected) -> float:
        return sum(p[rule] == y for p, y in zip(picks, labels, strict=True)) / 40

    assert result.predictions == [norm for _, norm, _ in expected]
    assert (result.acc, result.acc_norm, result.acc_norm_chars) == (right(0), right(1), right(2))
    assert result.examples == 40
    assert [s for s, _, _ in expected] != [n for _, n, _ in expected]  # the rules differ here
    # Counting the space before each ending as a character changes the figure here, so
    # the assertion above tells the harness's length from one a character longer.
    with_space = [reference(lambda t: hf_model(t).logits, tokenizer, e, 1) for e in examples]
    assert right(2, with_space) != right(2)


def test_a_nanogpt_checkpoint_on_gpt2_tokens_imports_and_is_judged_the_same(cli, hf_gpt2, tmp_path):
    from test_import import nanogpt_checkpoint

    # nanoGPT trained from scratch on GPT-2 tokens: 320 rows for the 300 tokens of the
    # GPT-2-format test tokenizer, as its 50,304 for GPT-2's 50,257.
    folder, _ = hf_gpt2
    torch_model = nanogpt_checkpoint(tmp_path, True, None, vocab=320, block=64)
    out = tmp_path / "nano"
    imported = cli(
        "-m", "mlx_gpt", "import", "nanogpt", str(tmp_path / "ckpt.pt"),
        "--tokenizer-path", str(folder), "--out-dir", str(out),
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    model, tokenizer = RunFolder(out).load_model()
    assert (model.config.vocab_size, tokenizer.vocab_size) == (320, 300)
    examples = write_examples(tmp_path / "h.jsonl", n=16, seed=1)
    expected = [reference(torch_model, tokenizer, e)[1] for e in examples]
    result = evaluate(model, tokenizer, read_examples(tmp_path / "h.jsonl"), batch_examples=5)
    assert result.predictions == expected
    sample = cli(str(ROOT / "generate.py"), "--out-dir", str(out), "--tokens", "30")
    assert sample.returncode == 0, sample.stderr


def test_the_eval_command_prints_the_figures(cli, imported_gpt2, tmp_path):
    write_examples(tmp_path / "h.jsonl", n=12)
    data = str(tmp_path / "h.jsonl")
    result = cli(
        "-m", "mlx_gpt", "eval", "hellaswag", str(imported_gpt2), "--data", data, "--limit", "10"
    )
    assert result.returncode == 0, result.stderr
    assert "hellaswag 10 examples | acc " in result.stdout and "acc_norm " in result.stdout


def test_the_eval_command_shows_a_bar_on_a_terminal(imported_gpt2, tmp_path):
    import os
    import pty
    import subprocess
    import sys
    import threading

    write_examples(tmp_path / "h.jsonl", n=12)
    reader, writer = pty.openpty()  # stderr is a terminal, stdout a pipe
    seen = bytearray()

    def read():
        while True:
            try:
                chunk = os.read(reader, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            seen.extend(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    args = ["eval", "hellaswag", str(imported_gpt2), "--data", str(tmp_path / "h.jsonl")]
    result = subprocess.run(
        [sys.executable, "-m", "mlx_gpt", *args, "--batch", "2"],
        stdout=subprocess.PIPE, stderr=writer, text=True, timeout=240,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"},
    )  # fmt: skip
    os.close(writer)
    thread.join(timeout=10)
    os.close(reader)
    assert result.returncode == 0
    assert "hellaswag 12 examples" in result.stdout  # the figures stay on stdout, alone
    terminal = seen.decode(errors="replace")
    assert "12/12" in terminal and "━" in terminal, terminal


def test_two_ranks_split_the_examples_and_print_one_processs_figures(cli, imported_gpt2, tmp_path):
    from test_distributed import finish, start_ranks

    write_examples(tmp_path / "h.jsonl", n=13)  # odd: rank 0 scores 7, rank 1 scores 6
    args = ["eval", "hellaswag", str(imported_gpt2), "--data", str(tmp_path / "h.jsonl")]
    args += ["--batch", "3", "--threads", "1"]
    single = cli("-m", "mlx_gpt", *args)
    assert single.returncode == 0, single.stderr
    ranks = start_ranks(tmp_path, lambda r: args, program=("-m", "mlx_gpt"))
    (code0, out0, err0), (code1, out1, err1) = finish(ranks)
    assert code0 == 0 and code1 == 0, (err0, err1)

    def figures(stdout: str) -> list[str]:  # examples, acc, acc_norm, acc_norm_chars
        return stdout.split(" | ")[:4]

    assert figures(out0) == figures(single.stdout)
    assert figures(out0)[0] == "hellaswag 13 examples" and out1 == ""


@pytest.mark.parametrize("damage, message", [
    ("missing", "does not exist; download hellaswag_val.jsonl"),
    ("bad_line", "line 3 is not a HellaSwag example"),
    ("char_run", "needs a BPE or GPT-2 tokenizer"),
])  # fmt: skip
def test_bad_hellaswag_input_is_one_line_exit_2(
    cli, imported_gpt2, tiny_run, tmp_path, damage, message
):
    data, run = tmp_path / "h.jsonl", imported_gpt2
    write_examples(data, n=5)
    if damage == "missing":
        data = tmp_path / "nothing.jsonl"
    elif damage == "bad_line":
        lines = data.read_text().splitlines()
        lines[2] = '{"ctx": "no endings"}'
        data.write_text("\n".join(lines) + "\n")
    else:
        run = tiny_run[0]
    result = cli("-m", "mlx_gpt", "eval", "hellaswag", str(run), "--data", str(data))
    assert result.returncode == 2, result.stderr
    assert message in one_line_error(result)


@pytest.mark.parametrize(
    "recipe", [[], ["--architecture", "modern", "--optimizer", "muon"]], ids=["gpt2", "modern"]
)
def test_training_scores_hellaswag_at_evaluations_and_plots_it(cli, tmp_path, recipe):
    data = tmp_path / "h.jsonl"
    write_examples(data, n=12)
    out = tmp_path / "run"
    result = cli(str(ROOT / "train.py"), "--preset", "tiny", "--tokenizer", "bpe", "--vocab-size",
                 "300", "--max-iters", "10", "--eval-interval", "5", "--eval-iters", "2",
                 "--hellaswag", str(data), "--hellaswag-every", "10", "--sample-tokens", "0",
                 "--out-dir", str(out), *recipe)  # fmt: skip
    assert result.returncode == 0, result.stderr
    # generate.py streams from the run's KV cache, whichever block it is
    sampled = cli(str(ROOT / "generate.py"), "--out-dir", str(out), "--tokens", "20")
    assert sampled.returncode == 0 and sampled.stdout.strip(), sampled.stderr
    scored = [r for r in read_metrics(out / "metrics.jsonl") if "hellaswag_acc_norm" in r]
    assert [r["step"] for r in scored] == [0, 10]  # every 10 steps, of evaluations every 5
    model, tokenizer = RunFolder(out).load_model("latest")  # the weights at step 10
    again = evaluate(model, tokenizer, read_examples(data))
    assert (scored[-1]["hellaswag_acc_norm"], scored[-1]["hellaswag_acc"]) == (
        again.acc_norm,
        again.acc,
    )
    plotted = cli("-m", "mlx_gpt", "plot", str(out), "--metric", "hellaswag", "--output",
                  str(tmp_path / "h.png"))  # fmt: skip
    assert plotted.returncode == 0 and (tmp_path / "h.png").stat().st_size > 0, plotted.stderr


def test_hellaswag_in_training_needs_a_subword_tokenizer(cli, tmp_path):
    write_examples(tmp_path / "h.jsonl", n=3)
    out = tmp_path / "run"
    data = str(tmp_path / "h.jsonl")
    result = cli(
        str(ROOT / "train.py"), "--preset", "tiny", "--hellaswag", data, "--out-dir", str(out)
    )
    assert result.returncode == 2 and "needs a BPE or GPT-2 tokenizer" in one_line_error(result)
    assert not out.exists()
