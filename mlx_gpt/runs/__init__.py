"""A run on disk: its folder (folder.py) and the atomic checkpoints inside it
(checkpoint.py)."""
