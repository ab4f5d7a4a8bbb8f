"""Token examples -> padded, bucketed numpy batches in a resumable order.

Numpy only (no jax): the compiled step programs take these arrays as inputs.
The examples come from ``runtime/data.py`` (``TokenizedData``).

Batches are ``dict[str, np.ndarray]``: ``tokens [B,T] int32``, ``targets [B,T]
int32`` with ``targets[:, t] = tokens[:, t+1]`` (last column: pad),
``loss_mask [B,T] float32`` aligned with targets, ``attention_mask [B,T] bool``
(True = real token), ``positions [B,T] int32`` (0 at each row's first real
token), ``example_ids [B] int64`` (row index in the source rows). Preference
batches hold ``chosen_*`` and ``rejected_*`` of each array, in one bucket so a
step can concatenate them; prompt batches hold tokens, attention_mask and
positions. T is the smallest bucket that fits the batch's longest example.

Order: epoch e visits the examples in ``default_rng([seed, e]).permutation(N)``;
the epochs are laid end to end as one stream and the cursor is the number of
examples consumed from it. A batch that runs past the end of an epoch is
completed from the next epoch's permutation (so every batch is full and the
cursor alone fixes all later batches): a stream started at ``start_cursor=k``
yields exactly the batches a continuing stream yields after consuming k examples.
``ordered_batches`` is the one-pass, unshuffled alternative for evaluation.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tunix_dsl.runtime.data import Batch, TokenizedData


def length_buckets(max_seq_len: int, buckets: Sequence[int] | None = None,
                   min_bucket: int = 16) -> tuple[int, ...]:
    """Padded lengths a batch may take, ascending; the largest is the length limit.

    Default: powers of two from ``min_bucket`` below ``max_seq_len``, then
    ``max_seq_len``. Given buckets must be positive and at most ``max_seq_len``.
    """
    if buckets is None:
        out, b = [], min_bucket
        while b < max_seq_len:
            out.append(b)
            b *= 2
        return (*out, max_seq_len)
    chosen = sorted(set(buckets))
    if not chosen or chosen[0] < 2 or chosen[-1] > max_seq_len:
        raise ValueError(f"buckets {list(buckets)} must be non-empty, each between 2 and "
                         f"max_seq_len {max_seq_len}")
    return tuple(chosen)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``length`` tokens."""
    i = bisect.bisect_left(buckets, length)
    if i == len(buckets):
        raise ValueError(f"a sequence of {length} tokens exceeds the largest bucket {buckets[-1]}")
    return buckets[i]


def check_batch_size(batch_size: int, shards: int, what: str) -> None:
    """Fail with the nearest valid sizes when ``batch_size`` does not split into ``shards``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size % shards:
        lower, upper = batch_size - batch_size % shards, batch_size + shards - batch_size % shards
        options = f"{lower} or {upper}" if lower else str(upper)
        raise ValueError(f"batch_size {batch_size} is not divisible by {shards} ({what}); "
                         f"use {options}")


@dataclass(frozen=True)
class LocalRows:
    """The rows one process feeds: ``[start, stop)`` of every run of ``period`` rows of a batch
    (``period`` = the micro-batch, whose example axis the devices split)."""

    start: int
    stop: int
    period: int

    def of(self, indices: np.ndarray) -> np.ndarray:
        return indices.reshape(-1, self.period)[:, self.start: self.stop].reshape(-1)


class BatchStream:
    """Deterministic, resumable batches over a :class:`TokenizedData`.

    The whole state is ``cursor`` (examples consumed); see the module docstring
    for the order. With ``local`` (a process of a multi-process job) every
    process walks the same global batches and collates only its own rows of
    each micro-batch; the bucket comes from the global batch so all processes
    agree on shapes.
    """

    def __init__(self, data: TokenizedData, batch_size: int, seed: int,
                 buckets: Sequence[int] | None = None, *, start_cursor: int = 0,
                 local: LocalRows | None = None):
        check_batch_size(batch_size, 1, "rows")
        if local is not None and (batch_size % local.period or not 0 <= local.start < local.stop <= local.period):
            raise ValueError(f"local rows {local} do not split a batch of {batch_size}")
        if seed < 0 or start_cursor < 0:
            raise ValueError(f"seed and start_cursor must be >= 0, got {seed}, {start_cursor}")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.buckets = tuple(buckets) if buckets is not None else length_buckets(data.max_len)
        if self.buckets[-1] < int(data.lengths.max()):
            raise ValueError(f"largest bucket {self.buckets[-1]} is shorter than the longest "
                             f"example ({int(data.lengths.max())} tokens)")
        self.cursor = start_cursor
        self._local = local
        self._orders: dict[int, np.ndarray] = {}

    @property
    def share(self) -> float:
        """The fraction of every batch's rows this process collates (1 without `local`)."""
        return 1.0 if self._local is None else (self._local.stop - self._local.start) / self._local.period

    def _mine(self, indices: np.ndarray) -> np.ndarray:
        return indices if self._local is None else self._local.of(indices)

    @property
    def epoch(self) -> int:
        """The epoch the next example comes from."""
        return self.cursor // len(self.data)

    def order(self, epoch: int) -> np.ndarray:
        """Example indices in the order epoch ``epoch`` visits them."""
        if epoch not in self._orders:
            if len(self._orders) >= 2:  # a batch spans at most a few epochs; keep the cache small
                self._orders.pop(min(self._orders))
            rng = np.random.default_rng([self.seed, epoch])
            self._orders[epoch] = rng.permutation(len(self.data))
        return self._orders[epoch]

    def indices(self, start: int, count: int) -> np.ndarray:
        """Example indices at stream positions ``[start, start + count)``."""
        n, out, pos = len(self.data), [], start
        while pos < start + count:
            epoch, offset = divmod(pos, n)
            take = min(n - offset, start + count - pos)
            out.append(self.order(epoch)[offset: offset + take])
            pos += take
        return np.concatenate(out)

    def next_batch(self) -> Batch:
        """The next batch (this process's slice); advances the cursor by ``batch_size``."""
        idx = self.indices(self.cursor, self.batch_size)
        length = bucket_for(int(self.data.lengths[idx].max()), self.buckets)
        self.cursor += self.batch_size
        return self.data.collate(self._mine(idx), length)

    def next_batches(self, k: int) -> Batch:
        """The next ``k`` batches stacked ``[k, B, ...]`` in one bucket (for k steps per call)."""
        idx = self.indices(self.cursor, k * self.batch_size).reshape(k, self.batch_size)
        length = bucket_for(int(self.data.lengths[idx].max()), self.buckets)
        self.cursor += k * self.batch_size
        parts = [self.data.collate(self._mine(row), length) for row in idx]
        return {key: np.stack([p[key] for p in parts]) for key in parts[0]}


def without_filler(batch: Batch) -> Batch:
    """Zero the loss and attention masks of an eval batch's filler rows (``valid`` False),
    so every count and sum a loss computes skips them."""
    filler = ~batch["valid"]
    out = dict(batch)
    for name, value in batch.items():
        if name.endswith(("loss_mask", "attention_mask")):
            out[name] = np.where(filler[:, None], np.zeros_like(value), value)
    return out


def ordered_batches(data: TokenizedData, batch_size: int,
                    buckets: Sequence[int] | None = None) -> Iterator[Batch]:
    """One pass in dataset order (for eval), every batch ``batch_size`` rows.

    The last batch is filled up by repeating the final example so shapes stay
    fixed; ``valid [B] bool`` is False on those filler rows, which a metric must skip.
    """
    check_batch_size(batch_size, 1, "rows")
    buckets = tuple(buckets) if buckets is not None else length_buckets(data.max_len)
    n = len(data)
    for start in range(0, n, batch_size):
        real = np.arange(start, min(start + batch_size, n))
        idx = np.concatenate([real, np.full(batch_size - len(real), n - 1)])
        batch = data.collate(idx, bucket_for(int(data.lengths[idx].max()), buckets))
        batch["valid"] = np.arange(batch_size) < len(real)
        yield batch
