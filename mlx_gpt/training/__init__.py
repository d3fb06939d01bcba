"""Training, in three files read in this order:

    start.py   prepare(cfg) -> Start: a new run, a resumed one or a fine-tune, checked
               and loaded (the tokenizer, the splits, the model, the optimizer, the
               step and the random generators); nothing is written
    loop.py    Loop(start).run() -> TrainResult: the steps, evaluations, checkpoints and
               metric records; the only writer of the run folder
    step.py    the compiled step (and gradient accumulation over micro-batches and
               ranks) and the evaluation between steps

    start = prepare(cfg, resume=False)
    result = Loop(start, reporters=[print]).run()

The rest serves them: guards.py (divergence, memory, the save clock), signals.py (a
clean stop on Ctrl-C, SIGTERM, SIGHUP), lock.py (one writer per run folder) and
optimizer.py (AdamW as PyTorch computes it, and nanoGPT's schedule). The settings come
from settings.resolve, and the command line that runs all this is cli/train.py.
"""

from mlx_gpt.training.loop import Loop
from mlx_gpt.training.result import TrainResult
from mlx_gpt.training.start import Start, prepare

__all__ = ["Loop", "Start", "TrainResult", "prepare"]
