"""Decode images on all cores while the network runs, and hand them out in batches.

Pillow releases the GIL while decoding and resizing, and TensorFlow releases it
while computing, so a thread pool keeps decoding ahead of the forward pass with a
bounded window: memory stays flat however many images there are.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bneck.features.images.decode import UnusableImage, decode_image


def _decode_one(path: str, size: int, sha256=None):
    try:
        return decode_image(path, size, sha256), None
    except UnusableImage as exc:
        return None, str(exc)


def decoded_batches(
    items: Sequence[tuple[str, str]], size: int, batch_size: int, workers: int = 0, keys_are_sha256: bool = False
) -> Iterator[tuple[list[str], np.ndarray, list[tuple[str, str]]]]:
    """Yield (keys, uint8 batch, failures) for ``items`` = [(key, path), ...] in order.

    ``failures`` lists (key, reason) for files that could not be decoded; they are
    left out of the batch. The last batch may be short. With ``keys_are_sha256`` the
    bytes decoded must hash to their key (else a failure: the file changed).
    """
    workers = workers or os.cpu_count() or 1
    window = max(2 * batch_size, 4 * workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bneck-decode")
    try:
        pending: deque = deque()
        it = iter(items)
        keys, failures = [], []
        batch = np.empty((batch_size, size, size, 3), np.uint8)

        def top_up():
            while len(pending) < window:
                nxt = next(it, None)
                if nxt is None:
                    return
                pending.append((nxt[0], pool.submit(_decode_one, nxt[1], size, nxt[0] if keys_are_sha256 else None)))

        top_up()
        while pending:
            key, future = pending.popleft()
            top_up()
            array, reason = future.result()
            if array is None:
                failures.append((key, reason))
                continue
            batch[len(keys)] = array
            keys.append(key)
            if len(keys) == batch_size:
                yield keys, batch, failures
                keys, failures = [], []
                batch = np.empty_like(batch)
        if keys or failures:
            yield keys, batch[: len(keys)], failures
    finally:  # also on Ctrl-C or an abandoned generator: queued decodes are dropped, not waited for
        pool.shutdown(wait=True, cancel_futures=True)
