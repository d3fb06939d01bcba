"""gpt.py's whole training loop on the PyTorch baseline: `python bench/torch_train.py SPEC_JSON`.

The end-to-end row of bench/compare.py: the lecture's own loop as a user runs it
(get_batch, estimate_loss over eval_iters batches of each split every eval_interval
steps and at the last step, AdamW), on the bundled tiny Shakespeare, with the
bookkeeping train.py does so that both rows do the same work: at every evaluation a
metrics line, latest/ (weights and optimizer state) and, on a new best val loss, best/,
each written to a temporary folder, fsynced and renamed into place; the loss plot at
the end. Prints one JSON line: the final val loss (as gpt.py, evaluated before the last
step) and the seconds spent in estimate_loss; compare.py times the whole process.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import durable, emit, model_dims, read_spec
from torch_gpt import TorchGPT, pick_device


def save(folder: Path, model, optimizer, state: dict) -> None:
    """A checkpoint as train.py writes one: whole in FOLDER.tmp, fsynced, then renamed."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / "model.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    for f in ("model.pt", "optimizer.pt", "state.json", "."):
        durable.fsync(tmp / f)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    durable.fsync(folder.parent)


def plot(records: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["train_loss"] for r in records], label="train")
    ax.plot(steps, [r["val_loss"] for r in records], label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def main() -> None:
    spec = read_spec()
    c = spec["config"]
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(1337)
    device = pick_device(spec["device"])
    text = open(spec["data"], encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}

    def get_batch(split):
        d = splits[split]
        ix = torch.randint(len(d) - c["block_size"], (c["batch_size"],))
        x = torch.stack([d[i : i + c["block_size"]] for i in ix])
        y = torch.stack([d[i + 1 : i + c["block_size"] + 1] for i in ix])
        return x.to(device), y.to(device)

    model = TorchGPT(vocab_size=len(chars), attention="gptpy", **model_dims(c)).to(device)

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in splits:
            losses = torch.zeros(c["eval_iters"])
            for k in range(c["eval_iters"]):
                x, y = get_batch(split)
                logits = model(x)
                losses[k] = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).item()
            out[split] = losses.mean().item()
        model.train()
        return out

    optimizer = torch.optim.AdamW(model.parameters(), lr=c["learning_rate"])
    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    eval_seconds, val_loss, best = 0.0, None, float("inf")
    for it in range(c["max_iters"]):
        if it % c["eval_interval"] == 0 or it == c["max_iters"] - 1:
            t = time.perf_counter()
            losses = estimate_loss()
            eval_seconds += time.perf_counter() - t
            val_loss = losses["val"]
            records.append({"step": it, "train_loss": losses["train"], "val_loss": val_loss})
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(records[-1]) + "\n")
            state = {"step": it, "val_loss": val_loss}
            save(out / "latest", model, optimizer, state)
            if val_loss < best:
                best = val_loss
                save(out / "best", model, optimizer, state)
        xb, yb = get_batch("train")
        logits = model(xb)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), yb.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    plot(records, out / "loss.png")
    emit(
        {
            "eval_s": eval_seconds,
            "val_loss": val_loss,
        }
    )


if __name__ == "__main__":
    main()
