"""GLiNER as a method: zero-shot NER given a schema's entity types, no LLM and no prompt.

``pipeline`` is the method as the paper draws it; ``method`` registers it (options, fingerprint, build).
"""

from openie.methods.gliner.pipeline import *  # noqa: F403  (the method's public names, as before the package)
