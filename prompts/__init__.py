"""openie prompts: filled in by later issues."""
