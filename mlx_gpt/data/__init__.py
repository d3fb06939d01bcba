"""The data, from a corpus on disk to the batches of a step.

text.py      one UTF-8 file read whole (tiny Shakespeare, --data FILE)
tokens.py    token ids as shards (arrays or memory maps), the splits, the batches
layouts.py   a prepared folder (--data DIR): ours, nanoGPT's or build-nanogpt's
sources.py   the documents of a corpus: files, a folder, a Hugging Face dataset
prepare.py   `python -m mlx_gpt prepare`: a corpus tokenized once into shards
recipe.py    a prepare's settings, and the command line that repeats them
restart.py   a prepare's folder: go on after a stop, or delete its files to start over
"""
