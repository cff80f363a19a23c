"""RetrieveAll (arXiv 2505.19128): multilingual NER with one LoRA adapter per language and input-aware routing.

``pipeline`` is the method as the paper draws it; ``method`` registers it (options, fingerprint, build); ``fit`` trains it from a config.
"""

from openie.methods.retrieveall.pipeline import *  # noqa: F403  (the method's public names, as before the package)
