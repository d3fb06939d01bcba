"""The network: the GPT (gpt.py) and the parts it is built of, each with the backward
pass that keeps GPT-2's memory in check (attention.py, linear.py, losses.py,
activations.py). The model returns logits and does no I/O."""
