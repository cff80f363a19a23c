"""The LLM-agent prompting layer on DSPy: schema signatures, extraction programs, tools, selectors, optimisers.

The floor above ``openie.methods``: it composes engines (through the openie DSPy LM), prompts'
parsing vocabulary, retrievers and the GLiNER / NER Retriever tools, and reuses the methods'
extraction statistics and batch loop so the runner treats a DSPy program like any extractor.

    program = ProgramSpec("chain_of_thought", task="ner").build(schema)
    extractor = DSPyExtractor(program, engine, schema)
    predictions = list(extractor.extract(records))

Experiment configs and ``openie extract`` build the same extractor from plain options
(``openie.agent.options.from_options``).
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before dspy imports litellm

from openie.agent.modules import (  # noqa: E402
    DSPY_ADAPTERS,
    PROGRAM_KINDS,
    AgentStats,
    DSPyExtractor,
    ExtractionAgent,
    ProgramError,
    ProgramSpec,
    load_program,
    program_kind,
    save_program,
)
from openie.agent.optimizers import OPTIMIZERS, StrictF1, examples_from_records, optimize_program, record_f1  # noqa: E402
from openie.agent.options import OPTIONS, TOOL_NAMES, DSPyOptionsError, check_options, from_options  # noqa: E402
from openie.agent.selectors import KNNFewShotProgram, RetrieverKNN, RetrieverKNNFewShot  # noqa: E402
from openie.agent.signatures import (  # noqa: E402
    TASKS,
    example_from_record,
    openie_signature,
    prediction_to_record,
)
from openie.agent.tools import (  # noqa: E402
    AgentTool,
    DemonstrationTool,
    SimilarMentionsTool,
    SpanProposalTool,
    TypeDescriptionsTool,
)
from openie.agent.trace import ExtractionTrace, ToolCall, traced  # noqa: E402

__all__ = [
    "DSPY_ADAPTERS", "OPTIMIZERS", "OPTIONS", "PROGRAM_KINDS", "TASKS", "TOOL_NAMES", "AgentStats", "AgentTool",
    "DSPyExtractor", "DSPyOptionsError", "DemonstrationTool", "ExtractionAgent", "ExtractionTrace",
    "KNNFewShotProgram", "ProgramError", "ProgramSpec", "RetrieverKNN", "RetrieverKNNFewShot",
    "SimilarMentionsTool", "SpanProposalTool", "StrictF1", "ToolCall", "TypeDescriptionsTool", "check_options",
    "example_from_record", "examples_from_records", "from_options", "load_program", "openie_signature",
    "optimize_program", "prediction_to_record", "program_kind", "record_f1", "save_program", "traced",
]
