"""Train the lecture's GPT with MLX: `python train.py --help` lists every option."""

import mlx_gpt.cli

if __name__ == "__main__":
    mlx_gpt.cli.train_main()
