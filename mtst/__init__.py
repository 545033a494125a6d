"""mtst: a multi-task sentence transformer built on all-mpnet-base-v2.

One shared encoder feeds an AG News topic head and a CoNLL-2003 NER head.
"""

from .config import DataConfig, ModelConfig
from .encoder import SentenceTransformer
from .model import MultiTaskSentenceTransformer

__all__ = ["DataConfig", "ModelConfig", "MultiTaskSentenceTransformer", "SentenceTransformer"]
