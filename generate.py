"""Stream text from a trained run: `python generate.py --help` lists every option."""

import mlx_gpt.cli

if __name__ == "__main__":
    mlx_gpt.cli.generate_main()
