"""Correction models on the wire: skops files, never pickles.

A model travels on the ``models`` topic as the bytes of a skops file, keyed by
``str(T_obs)``, with a ``version`` header (the number of samples it was trained
on: it only grows, and a restarted learner computes the same versions).
Loading checks that every type in the file is one we trust.
"""

from __future__ import annotations

import zipfile

import skops.io as sio

from streams.memory import BINARY
from streams.records import Record

from .schemas import MODELS, SchemaError

__all__ = ["TRUSTED_TYPES", "MAX_MODEL_BYTES", "dump_model", "load_model", "model_record"]

#: Types a model file may hold beyond skops' defaults (numpy, builtins, scikit-learn estimators).
TRUSTED_TYPES = frozenset({
    "estimators.correction.OmegaForest",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.linear_model._quantile.QuantileRegressor",
})


#: Largest model file the ``models`` topic accepts (bytes); the topic and producers are set up for it.
MAX_MODEL_BYTES = 64 * 2**20


def dump_model(model: object) -> bytes:
    """The skops file of ``model`` (deflate-compressed zip), as bytes."""
    data = sio.dumps(model, compression=zipfile.ZIP_DEFLATED, compresslevel=6)
    if len(data) > MAX_MODEL_BYTES:
        raise ValueError(f"model file of {len(data):,} bytes exceeds the {MAX_MODEL_BYTES:,} bytes models can hold")
    return data


def load_model(data: bytes) -> object:
    """Load a model file, refusing any type outside :data:`TRUSTED_TYPES` (``SchemaError``)."""
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:  # not a skops file at all
        raise SchemaError(f"not a skops model file: {exc}") from None
    unknown = untrusted - TRUSTED_TYPES
    if unknown:
        raise SchemaError(f"model file holds untrusted types: {sorted(unknown)}")
    return sio.loads(data, trusted=sorted(untrusted))


def model_record(T_obs: int, version: int, data: bytes) -> Record:
    """The ``models`` record of a model file for window ``T_obs``."""
    return Record(topic=MODELS.name, value=data, key=str(T_obs).encode(),
                  headers={"version": str(version), **BINARY})
