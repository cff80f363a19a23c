"""Method ``spacy``: an installed spaCy pipeline's named entities, mapped onto the run's schema."""
