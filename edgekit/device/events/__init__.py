"""Event records: what happened over many frames (a tracked object or a top class appeared, changed, went)."""
