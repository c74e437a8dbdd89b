"""Dashboards: ``realfork top`` (a live view of a running kernel) and the
HTML run report of ``realfork stress --report``."""

from .snapshot import Observer, Snapshot, pick_kernel

__all__ = ["Observer", "Snapshot", "pick_kernel"]
