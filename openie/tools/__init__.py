"""Embedding-based tools other methods call: GLiNER (span-type matching) and NER Retriever (type-queried mention search)."""
