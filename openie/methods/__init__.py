"""Methods: the published pipelines, composed from engines, prompts, retrievers, rewards and tools."""
