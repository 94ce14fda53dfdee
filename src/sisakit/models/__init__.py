"""Shard models: what each shard trains. Built-ins live in this package."""

from .base import ShardModel
from .bpr import BPRMF
from .ials import IALS
from .ncf import NCF
from .popularity import Popularity
from .sasrec import SASRec, SASRecNet, user_sequences
from .t5rec import T5Rec, T5RecNet

__all__ = ["BPRMF", "IALS", "NCF", "Popularity", "SASRec", "SASRecNet", "ShardModel",
           "T5Rec", "T5RecNet", "user_sequences"]
