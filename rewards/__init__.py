"""openie rewards: filled in by later issues."""
