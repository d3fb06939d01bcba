"""Weights from elsewhere: GPT-2 from Hugging Face (importing.py, hub.py) and nanoGPT's
checkpoints (nanogpt.py), written as ordinary run folders."""
