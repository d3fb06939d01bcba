"""The command line: `python train.py`, `python generate.py`, and
`python -m mlx_gpt prepare|info|plot|samples|import|eval` (or `mlx-gpt ...`).

Each command lives in a module of its own (train.py, generate.py, prepare.py,
tools.py, importing.py). They parse flags, call the library, and turn a UserError into one line
on stderr with an exit code (common.user_errors).
"""

from __future__ import annotations

import typer

from mlx_gpt.cli import evals, generate, importing, prepare, tools, train

app = typer.Typer(
    help="mlx-gpt: the lecture's GPT, and GPT-2, trained, imported and sampled with MLX.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command("train", help=train.HELP)(train.train_command)
app.command("generate", help=generate.HELP)(generate.generate_command)
app.command("prepare", help=prepare.HELP)(prepare.prepare_command)
app.command("info")(tools.info_command)
app.command("plot")(tools.plot_command)
app.command("samples")(tools.samples_command)
app.add_typer(importing.app, name="import")
app.add_typer(evals.app, name="eval")


def main() -> None:
    app()


def train_main() -> None:
    """`python train.py`: the train command on its own."""
    typer.main.get_command(app).commands["train"].main(prog_name="train.py")


def generate_main() -> None:
    """`python generate.py`: the generate command on its own."""
    typer.main.get_command(app).commands["generate"].main(prog_name="generate.py")
