"""`python -m mlx_gpt info|plot|train|generate`."""

from mlx_gpt.cli import main

main()
