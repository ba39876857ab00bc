class ReproError(Exception):
    """A user-facing problem (bad name, missing data, malformed spec): reported as one line, exit 2."""
