"""Correction models: how they are fitted (:func:`fit_correction`, by the learner and the
backtest alike) and how they travel: skops files, never pickles.

A model travels on the ``models`` topic as the bytes of a skops file, keyed by
``str(T_obs)``, with a ``version`` header (the number of samples it was trained
on: it only grows, and a restarted learner computes the same versions).
Loading checks that every type in the file is one we trust; :func:`check_model` also
checks the file's HMAC signature when the pipeline has a ``model_key``, and that the model
predicts a finite correction for a valid cascade (a file holding, say, a plain dict is
refused before it is swapped in).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import zipfile
from typing import TYPE_CHECKING

import numpy as np

from estimators.marks import MarkLaw
from streams.memory import BINARY
from streams.records import Record

from .schemas import MODELS, SchemaError

if TYPE_CHECKING:
    from estimators.correction import OmegaForest

__all__ = ["TRUSTED_TYPES", "MAX_MODEL_BYTES", "SELECTION_CV", "SELECTION_MAX", "SELECTION_TREES", "MIN_MARKS",
           "learn_mark_law", "fit_correction", "dump_model",
           "load_model", "model_record", "model_signature", "check_model", "check_usable"]

#: Types a model file may hold beyond skops' defaults (numpy, builtins, scikit-learn estimators).
TRUSTED_TYPES = frozenset({
    "estimators.correction.OmegaForest",
    "estimators.marks.MarkLaw",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.linear_model._quantile.QuantileRegressor",
})


#: Largest model file the ``models`` topic accepts (bytes); the topic and producers are set up for it.
MAX_MODEL_BYTES = 64 * 2**20


#: Inner cross-validation folds of the correction's candidate selection.
SELECTION_CV = 3
#: Samples the selection runs on, at most (the chosen candidate is then fitted on all of them).
SELECTION_MAX = 500
#: Trees of each forest the selection compares, at most the settings' trees (with which the chosen candidate
#: is then fitted).
SELECTION_TREES = 20


#: Fewest marks a mark law is learnt from (below, the settings' Pareto law is kept).
MIN_MARKS = 1000


def learn_mark_law(marks: np.ndarray, default: MarkLaw) -> MarkLaw:
    """The marks' law learnt from the marks (followers, shape (n,)) of complete cascades, as the
    estimator (online) and the backtest (per fold) learn it: :meth:`estimators.MarkLaw.fit`.

    ``default`` (the settings' Pareto law) when fewer than :data:`MIN_MARKS` marks are known or
    their tail has an infinite mean."""
    m = np.asarray(marks, dtype=np.float64).ravel()
    if m.size < MIN_MARKS:
        return default
    try:
        return MarkLaw.fit(m)
    except ValueError:
        return default


def fit_correction(X: np.ndarray, n_true: np.ndarray, *, n_estimators: int, seed: int, mark_law: MarkLaw,
                   choice: tuple[str, int, str] | None = None) -> OmegaForest:
    """The correction of one window, as both the pipeline's learner and the backtest learn it.

    ``X``: :func:`estimators.forecast.correction_features` rows (shape (n, 7)); ``n_true``:
    final sizes (shape (n,)). ``choice`` None selects among
    :data:`estimators.correction.CANDIDATES` by :data:`SELECTION_CV`-fold inner
    cross-validation on at most :data:`SELECTION_MAX` samples, with forests of
    :data:`SELECTION_TREES` trees; otherwise that candidate is
    fitted directly. ``mark_law``: the marks' law of the model's own forecast.
    """
    from estimators.correction import fit_forest

    kw = {} if choice is None else {"candidates": (choice,)}
    return fit_forest(X, n_true, n_estimators=n_estimators, random_state=seed, cv=SELECTION_CV,
                      select_max=SELECTION_MAX, select_trees=SELECTION_TREES, mark_law=mark_law, **kw)


def dump_model(model: object) -> bytes:
    """The skops file of ``model`` (deflate-compressed zip), as bytes."""
    import skops.io as sio  # 3 s of imports (all of scikit-learn): only the stages that move models pay them

    data = sio.dumps(model, compression=zipfile.ZIP_DEFLATED, compresslevel=6)
    if len(data) > MAX_MODEL_BYTES:
        raise ValueError(f"model file of {len(data):,} bytes exceeds the {MAX_MODEL_BYTES:,} bytes models can hold")
    return data


def load_model(data: bytes) -> object:
    """Load a model file, refusing any type outside :data:`TRUSTED_TYPES` (``SchemaError``)."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:  # not a skops file at all
        raise SchemaError(f"not a skops model file: {exc}") from None
    unknown = untrusted - TRUSTED_TYPES
    if unknown:
        raise SchemaError(f"model file holds untrusted types: {sorted(unknown)}")
    try:
        return sio.loads(data, trusted=sorted(untrusted))
    except Exception as exc:  # noqa: BLE001 - a damaged or hostile file
        raise SchemaError(f"cannot load the model file: {type(exc).__name__}: {exc}") from None


def model_record(T_obs: int, version: int, data: bytes, model: object = None) -> Record:
    """The ``models`` record of a model file for window ``T_obs``; ``model``, the model of the file
    compiled (:class:`estimators.inference.CompiledOmega`), rides along in process as the record's
    ``message`` (a predictor in the same process takes it instead of loading the file: neither skops,
    whose import walks all of scikit-learn, nor scikit-learn itself)."""
    return Record(topic=MODELS.name, value=data, key=str(T_obs).encode(),
                  headers={"version": str(version), **BINARY}, message=model)


#: Rows of features every usable model must predict a finite correction for (the second one as a
#: course-format message gives them: without the series' statistics).
_PROBE = np.array([[1e-3, 0.5, 10.0, 20.0, 3.0, 60.0, 2000.0], [1e-3, 0.5, 10.0, 20.0, np.nan, np.nan, np.nan]])


def model_signature(key: bytes, data: bytes) -> str:
    """The HMAC-SHA256 of a model file under ``key``, in hex (the ``signature`` header of ``models``)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


#: Held while scikit-learn may be imported for a model file: by :func:`import_model_loaders` and while
#: :func:`check_model` loads a file (one at a time in a process). scikit-learn's modules import one
#: another in cycles, and two threads importing them at once can deadlock or see a module half
#: made (CPython raises ``_DeadlockError`` or an ``ImportError`` "partially initialized module":
#: predictors stopped so in chaos runs, a model's check racing the stage's background import).
_LOADING = threading.Lock()


def import_model_loaders() -> None:
    """Import what loading a model file needs (skops, and with it scikit-learn: 1-2 s the first time),
    under :data:`_LOADING`: a Kafka predictor runs it in a background thread while it joins its group,
    and a model's check that comes meanwhile waits for it."""
    with _LOADING:
        import skops.io  # noqa: F401

        from estimators.correction import OmegaForest  # noqa: F401


def check_model(data: bytes, headers: dict[str, str], key: bytes | None) -> object:
    """The model of a ``models`` record, verified: signature (when ``key`` is set), trusted types, and a
    trial prediction. Raises :class:`SchemaError` saying what is wrong. An ``OmegaForest`` comes back
    compiled (:meth:`estimators.correction.OmegaForest.compile`: the same predictions, faster). Callable
    from several threads: the files are loaded one at a time (:data:`_LOADING`)."""
    if key is not None:
        given = headers.get("signature", "")
        if not given or not hmac.compare_digest(given, model_signature(key, data)):
            raise SchemaError("bad or missing signature (the models topic is signed)")
    with _LOADING:
        from estimators.correction import OmegaForest  # loading the file imported scikit-learn already

        model = load_model(data)
        if isinstance(model, OmegaForest):
            try:
                model = model.compile()
            except Exception as exc:  # noqa: BLE001 - an unfitted or damaged forest
                raise SchemaError(f"not a usable correction model (OmegaForest): {exc}") from None
    return check_usable(model)


def check_usable(model: object) -> object:
    """``model`` if it predicts a finite correction for a valid cascade (a trial prediction), else
    :class:`SchemaError` saying why. :func:`check_model` ends with it; a model made in the same process
    (``Record.message`` of a ``models`` record) gets this check only."""
    from estimators.inference import predict_omega

    try:
        omega = predict_omega(model, _PROBE)
    except Exception as exc:  # noqa: BLE001 - any object skops trusts may come out of a file
        raise SchemaError(f"not a usable correction model ({type(model).__name__}): {exc}") from None
    if omega.shape != (len(_PROBE),) or not np.isfinite(omega).all():
        raise SchemaError(f"the model predicts {omega!r} for a valid cascade")
    return model
