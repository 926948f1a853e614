"""Text tools for the defenses: WordNet and spaCy loading, EDA augmentation, subtexts."""
