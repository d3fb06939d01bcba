"""Several ranks under `mlx.launch`: the Ranks facade over mx.distributed (ranks.py) and
what happens when a peer is lost (peers.py)."""
