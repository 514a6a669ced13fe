"""Tracked objects and the event records about them (new, update, end)."""
