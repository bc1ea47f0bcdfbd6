"""Content hashes: images and weights enter cache keys by sha256, never by path."""
import hashlib
import json

_BLOCK = 1 << 20


def sha256_file(path: str) -> str:
    """Return the hex sha256 of the file's bytes. Raises OSError if unreadable."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(_BLOCK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj) -> str:
    """Return the hex sha256 of ``obj`` as sorted-key compact JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
