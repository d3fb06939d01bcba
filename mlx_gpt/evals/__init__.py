"""Benchmarks a trained model is judged by: hellaswag.py."""
