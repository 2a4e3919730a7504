"""The built-in scenario streams, registered on import (see `lifelong streams`)."""

from lifelong.data.scenarios import classification, ner, pretraining, relations, translation

__all__ = ["classification", "ner", "pretraining", "relations", "translation"]
