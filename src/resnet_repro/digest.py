"""The digests that tie an artifact to its MLflow run: `track report` tags a report run with
artifacts_digest of its files, and the reproduction report finds that run by the same digest, so the
two must come from this one function."""

import hashlib


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifacts_digest(files):
    """The digest of a figure's or table's files (the artifacts_sha256 tag of its report run)."""
    return hashlib.sha256("".join(f"{f.name}:{sha256(f)}\n" for f in files).encode()).hexdigest()
