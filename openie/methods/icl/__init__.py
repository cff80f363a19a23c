"""In-context extraction: prompt a (LoRA-adapted) LLM zero- or few-shot and read grounded annotations.

``pipeline`` is the method as the paper draws it; ``method`` registers it (options, fingerprint, build).
"""

from openie.methods.icl.pipeline import *  # noqa: F403  (the method's public names, as before the package)
