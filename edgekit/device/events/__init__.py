"""Event records: what happened over many frames (an object or a class appeared, changed, went), not per frame."""
