"""Versions others can trust: dataset cards (card.py), record-level diffs (diff.py), Hub publishing (hub.py)."""
