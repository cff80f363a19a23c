"""EL4NER (arXiv 2505.23038): an ensemble of small LLMs for training-free in-context NER.

``pipeline`` is the method as the paper draws it; ``method`` registers it (options, fingerprint, build).
"""

from openie.methods.el4ner.pipeline import *  # noqa: F403  (the method's public names, as before the package)
