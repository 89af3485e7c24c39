"""Full field-of-view inference: plan, patches through the network, decide, stitch, write.

``process_movie`` runs everything in one process; ``prepare``, ``run_chunk`` (or ``run_chunks``,
several chunks as one pipeline) and ``finalize`` are the same steps for a queue of workers.
Nothing here imports TensorFlow: the network comes in as a predictor object.
"""

from model.inference.engine import (
    InferenceCancelled,
    ResultSummary,
    finalize,
    load_plan,
    prepare,
    process_movie,
    run_chunk,
    run_chunks,
)
from model.inference.params import InferenceParams
from model.inference.plan import Plan

__all__ = [
    "InferenceCancelled",
    "InferenceParams",
    "Plan",
    "ResultSummary",
    "finalize",
    "load_plan",
    "prepare",
    "process_movie",
    "run_chunk",
    "run_chunks",
]
