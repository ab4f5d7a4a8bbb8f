"""Data the pipeline reads, jax-free: dataset sources (jsonl, parquet,
synthetic tasks), chat messages and templates, and tokenizers.

The runtime turns these rows into token batches (`tunix_dsl.runtime.data`).
"""
