"""openie retrievers: filled in by later issues."""
