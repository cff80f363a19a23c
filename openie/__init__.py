"""openie: LLM-based information extraction for researchers.

The core floor (records, schema, readers, datasets, grounding, chunking, metrics) imports no
model library; engines, prompts, retrievers, rewards, adapters and tools stand on it.
"""

from openie.errors import DataFormatError, OpenIEError, SchemaError, UnknownNameError
from openie.records import Entity, Event, EventArgument, Record, Relation, read_jsonl, write_jsonl
from openie.schema import EntityType, EventType, RelationType, RoleType, Schema

__version__ = "0.1.0"

__all__ = [
    "DataFormatError", "OpenIEError", "SchemaError", "UnknownNameError",
    "Entity", "Event", "EventArgument", "Record", "Relation", "read_jsonl", "write_jsonl",
    "EntityType", "EventType", "RelationType", "RoleType", "Schema",
]
