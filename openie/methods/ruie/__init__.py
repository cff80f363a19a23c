"""RUIE (arXiv 2409.11673): in-context extraction with a demonstration retriever trained from LLM preferences.

``pipeline`` is the method as the paper draws it.
"""

from openie.methods.ruie.pipeline import *  # noqa: F403  (the method's public names, as before the package)
