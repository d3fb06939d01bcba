"""gpt.py's whole training loop on the PyTorch baseline: `python bench/torch_train.py SPEC_JSON`.

The end-to-end row of bench/compare.py: the lecture's own loop as a user runs it
(get_batch, estimate_loss over eval_iters batches of each split every eval_interval
steps and at the last step, AdamW), on the bundled tiny Shakespeare. Prints one JSON
line: the final val loss (as gpt.py, evaluated before the last step) and the seconds
spent in estimate_loss; compare.py times the whole process.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from common import emit, model_dims, read_spec
from torch_gpt import TorchGPT, pick_device


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
    eval_seconds, val_loss = 0.0, None
    for it in range(c["max_iters"]):
        if it % c["eval_interval"] == 0 or it == c["max_iters"] - 1:
            t = time.perf_counter()
            val_loss = estimate_loss()["val"]
            eval_seconds += time.perf_counter() - t
        xb, yb = get_batch("train")
        logits = model(xb)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), yb.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    emit(
        {
            "eval_s": eval_seconds,
            "val_loss": val_loss,
        }
    )


if __name__ == "__main__":
    main()
