"""Which share of a test's cases this run takes, so that `make test` stays near 20 minutes.

The gcc build runs every third case of a large corpus or matrix, the ASan+UBSan build
(VTOOL_SANITIZED=1) every sixth, shifted by one so the two builds cover different cases
(half of them between the two);
VTOOL_SLOW_TESTS=1 runs them all in both. A case is chosen by its position, so a run is
repeatable: the same cases every time. Shell tests use lib.sh's `sample`, the same rule.
"""
import os

SLOW = os.environ.get("VTOOL_SLOW_TESTS") == "1"
SANITIZED = bool(os.environ.get("VTOOL_SANITIZED"))
_seen = 0


def take():
    """True when the next case of this run is one to test."""
    global _seen
    n, _seen = _seen, _seen + 1
    if SLOW:
        return True
    return n % 6 == 1 if SANITIZED else n % 3 == 0


def sample(cases):
    """The cases of `cases` this run takes (see take())."""
    return [c for c in cases if take()]
