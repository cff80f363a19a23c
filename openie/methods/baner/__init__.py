"""BANER (COLING 2025): boundary-aware LLM span detection, prototype typing and LoRAHub for few-shot NER.

``pipeline`` is the method as the paper draws it; ``method`` registers it (options, fingerprint, build); ``fit`` trains it from a config.
"""

from openie.methods.baner.pipeline import *  # noqa: F403  (the method's public names, as before the package)
