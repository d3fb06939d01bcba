"""Text from a trained model: the KV-cache decoder (decoding.py) and the sampler
(sampling.py)."""
