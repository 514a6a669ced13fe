"""Logging setup; called only by the CLI and daemon entry points, never on import."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger once for the whole process.

    Args:
        verbosity: 0 shows warnings, 1 info, 2 or more debug.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    handler = logging.StreamHandler(sys.stderr)
    # Under systemd the journal adds its own timestamps, so the prefix would only repeat them.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if under_journal else _FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # TensorFlow's C++ side logs through its own channel; keep it quiet unless asked.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if verbosity < 2 else "0")
