"""Command lines for MPI launchers: one class per launcher, one file each, chosen by name."""

from .base import MpiLauncher, RankLayout, detect_launcher, launcher_class, launcher_names

__all__ = ["MpiLauncher", "RankLayout", "detect_launcher", "launcher_class", "launcher_names"]
