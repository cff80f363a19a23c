"""Experiments: whole-corpus extraction jobs, configs, grids and reports (the floor above methods)."""
