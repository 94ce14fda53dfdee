"""Class-level SISA for classification: labelled samples on the unchanged SISA engine.

Representation
--------------
A labelled sample is a *user* of an :class:`~sisakit.Interactions` (its raw id is the sample
id, its feature row is ``Interactions.user_features``) with exactly one record whose *item* is
its class label. The SISA engine (sharding, slicing, checkpoints, exact forgetting, the run
store) is reused as is:

* forgetting samples is ``sisa.forget(users=sample_ids)``; forgetting a class is forgetting every
  sample of that class (:func:`forget_class`), which retrains only the shards that held one;
* the forgotten samples' feature rows are zeroed in the run (like any forgotten user's
  attributes), so the run keeps no pixels of theirs;
* a class is *not* deactivated by :func:`forget_class`: deactivating an item changes what every
  shard may predict, so the engine would retrain every shard. No remaining shard model has seen
  the class, so the ensemble stops recognising it anyway. To also rule it out of every
  prediction, forget it as an item too (``sisa.forget(items=[label])``, which retrains every
  shard); :func:`predict_proba` gives inactive classes probability zero.

New samples (a test set) are classified by :func:`predict_proba`: the mean of the class
probabilities of the shard models that still hold training samples (a shard emptied by
forgetting, or one excluded with ``shards=``, abstains).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validation import check_float, check_int
from .data import Interactions
from .errors import DataError, UnknownIdError, ValidationError
from .requests import ForgetReport
from .sisa import SISA

__all__ = [
    "IMAGE_SUFFIXES",
    "ClassificationData",
    "accuracy",
    "affected_shards",
    "class_forgetting_report",
    "class_samples",
    "forget_class",
    "from_samples",
    "load_digits_data",
    "load_image_folder",
    "predict",
    "predict_proba",
    "shard_composition",
]

logger = logging.getLogger(__name__)

#: File suffixes :func:`load_image_folder` reads (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ClassificationData:
    """A labelled data set split into a training set (as Interactions) and a test set.

    Attributes
    ----------
    train : Interactions
        One record per training sample: user = sample id, item = class label, and the feature
        rows in ``train.user_features``.
    test_features : ndarray of float32
        ``(n_test, d)`` feature rows of the test samples.
    test_labels : ndarray
        Raw class label of each test sample.
    name : str
        A short description (e.g. ``"digits-3"``).
    """

    train: Interactions
    test_features: np.ndarray
    test_labels: np.ndarray
    name: str = ""

    @property
    def classes(self) -> np.ndarray:
        """Raw class labels, in class-index order."""
        return self.train.item_ids

    @property
    def n_classes(self) -> int:
        return self.train.n_items

    def __repr__(self) -> str:
        return (f"ClassificationData(name={self.name!r}, n_train={len(self.train)}, "
                f"n_test={len(self.test_labels)}, n_classes={self.n_classes}, "
                f"n_features={self.train.user_features.shape[1]})")


# ---------------------------------------------------------------------------------- data
def _features_array(features: Any, what: str) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2 or x.dtype.kind not in "iuf":
        raise ValidationError(f"{what} must be a numeric (n_samples, n_features) array, got "
                              f"{x.dtype} {x.shape}; flatten images to one row per sample")
    if not np.isfinite(x).all():
        raise DataError(f"{what} has NaN or infinite values; drop or impute them")
    return x.astype(np.float32)


def from_samples(
    features: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    *,
    sample_ids: Sequence[Any] | np.ndarray | None = None,
    classes: Sequence[Any] | np.ndarray | None = None,
) -> Interactions:
    """Labelled samples as :class:`~sisakit.Interactions` (one record per sample).

    Parameters
    ----------
    features : ndarray
        ``(n, d)`` numeric feature rows.
    labels : array-like of int or str
        Class label of each sample.
    sample_ids : array-like of int or str, optional
        Unique raw id of each sample (default ``0..n-1``); forget samples by these ids.
    classes : array-like, optional
        The full class space, in index order (default: the sorted distinct labels). Pass it to
        keep classes without samples in the space.

    Returns
    -------
    Interactions
        User = sample id, item = class label, ``user_features = features``.
    """
    x = _features_array(features, "features")
    y = np.asarray(labels)
    if y.shape != (len(x),):
        raise ValidationError(f"labels must have one entry per feature row ({len(x)}), got "
                              f"shape {y.shape}")
    ids = np.arange(len(x), dtype=np.int64) if sample_ids is None else np.asarray(sample_ids)
    if ids.shape != (len(x),):
        raise ValidationError(f"sample_ids must have one entry per feature row ({len(x)}), got "
                              f"shape {ids.shape}")
    # user_ids in sample order makes user index i the i-th sample, so features align by row.
    data = Interactions.from_arrays(ids, y, user_ids=ids, item_ids=classes)
    return data.replace(user_features=x)


def _split(x: np.ndarray, y: np.ndarray, ids: np.ndarray, classes: np.ndarray, test_size: float,
           seed: int, name: str) -> ClassificationData:
    test_size = check_float("test_size", test_size, minimum=0.0, maximum=1.0, max_open=True,
                            example=0.25)
    if test_size == 0:
        train = np.arange(len(y))
        test = np.zeros(0, dtype=np.int64)
    else:
        from sklearn.model_selection import train_test_split

        counts = {c: int((y == c).sum()) for c in np.unique(y)}
        small = [c for c, n in counts.items() if n < 2]
        if small:
            raise DataError(f"class(es) {small} have fewer than 2 samples, so a stratified test "
                            "split is impossible; add samples or pass test_size=0")
        train, test = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y,
                                       random_state=seed)
        train, test = np.sort(train), np.sort(test)
    data = from_samples(x[train], y[train], sample_ids=ids[train], classes=classes)
    return ClassificationData(data, x[test], y[test], name)


def _check_seed(seed: Any) -> int:
    return check_int("seed", seed, 0)


def load_digits_data(n_classes: int = 10, *, test_size: float = 0.25, seed: int = 0
                     ) -> ClassificationData:
    """scikit-learn's built-in 8×8 handwritten digits (no download), optionally a class subset.

    Parameters
    ----------
    n_classes : int
        Keep the digits ``0..n_classes-1`` (2 to 10; about 180 images per class).
    test_size : float
        Stratified share of every class held out as the test set.
    seed : int
        Seed of the train/test split.

    Returns
    -------
    ClassificationData
        64 features per sample (pixel intensities scaled to ``[0, 1]``); sample ids are the
        indices into :func:`sklearn.datasets.load_digits`, class labels the digits (ints).
    """
    n_classes = check_int("n_classes", n_classes, 2, 10)
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < n_classes)
    x = (digits.data[keep] / 16.0).astype(np.float32)
    y = digits.target[keep].astype(np.int64)
    return _split(x, y, keep.astype(np.int64), np.arange(n_classes, dtype=np.int64), test_size,
                  _check_seed(seed), f"digits-{n_classes}")


def load_image_folder(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (8, 8),
    *,
    grayscale: bool = True,
    test_size: float = 0.25,
    seed: int = 0,
    progress: bool | None = None,
) -> ClassificationData:
    """Images organised one sub-folder per class (``path/<class>/<image>``).

    Needs Pillow (``pip install 'sisakit[images]'``). Every image is converted to grayscale (or
    RGB), resized to ``size`` and flattened to one row of intensities in ``[0, 1]``.

    Parameters
    ----------
    path : path
        Folder whose sub-folders are the classes (the sub-folder names are the labels).
    size : (width, height)
        Size every image is resized to.
    grayscale : bool
        One channel (True) or three (RGB).
    test_size : float
        Stratified share of every class held out as the test set (0: no test set).
    seed : int
        Seed of the train/test split.
    progress : bool or None
        Show a progress bar while reading (None: only on a terminal).

    Returns
    -------
    ClassificationData
        Sample ids are the images' paths relative to ``path`` (``"cat/001.png"``).

    Raises
    ------
    DataError
        If Pillow is missing, the folder does not exist or holds no images, or an image cannot
        be read.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise DataError("reading images needs Pillow, which is not installed; install it with "
                        "pip install 'sisakit[images]'") from exc
    from tqdm.auto import tqdm

    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size)):
        raise ValidationError(f"size must be a (width, height) pair of positive ints, got {size!r}")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder with one sub-folder of images "
                        "per class")
    files = sorted(f for d in root.iterdir() if d.is_dir() for f in d.iterdir()
                   if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images found under {root}; expected {root}/<class>/<image> with "
                        f"suffixes {', '.join(IMAGE_SUFFIXES)}")
    mode = "L" if grayscale else "RGB"
    rows = np.empty((len(files), int(size[0]) * int(size[1]) * (1 if grayscale else 3)),
                    dtype=np.float32)
    # One iteration per file: decoding images is I/O, not a vectorisable hot path.
    for k, f in enumerate(tqdm(files, desc="reading images", leave=False,
                               disable=None if progress is None else not progress)):
        try:
            with Image.open(f) as img:
                img = img.convert(mode).resize((int(size[0]), int(size[1])), Image.BILINEAR)
                rows[k] = np.asarray(img, dtype=np.float32).reshape(-1) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {f} ({exc}); remove or replace the file") from exc
    labels = np.array([f.parent.name for f in files])
    ids = np.array([f.relative_to(root).as_posix() for f in files])
    logger.info("read %d images of %d classes from %s", len(files), len(np.unique(labels)), root)
    return _split(rows, labels, ids, np.unique(labels), test_size, _check_seed(seed),
                  f"images:{root.name}")


# ---------------------------------------------------------------------------------- prediction
def _nonempty_shards(sisa: SISA) -> np.ndarray:
    return np.bincount(sisa.assignment[0], minlength=sisa.n_shards) > 0


def _participants(sisa: SISA, shards: Iterable[int] | None) -> list[int]:
    use = _nonempty_shards(sisa)
    if shards is not None:
        chosen = np.asarray(list(shards), dtype=np.int64)
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= sisa.n_shards):
            raise ValidationError(f"shards must lie in [0, {sisa.n_shards}), got "
                                  f"{chosen.tolist()}; pass shard numbers of this run")
        mask = np.zeros(sisa.n_shards, dtype=bool)
        mask[chosen] = True
        use &= mask
    return np.flatnonzero(use).tolist()


def predict_proba(
    sisa: SISA,
    features: np.ndarray,
    *,
    shards: Iterable[int] | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Class probabilities of new samples: the mean of the shard models' softmax outputs.

    Parameters
    ----------
    sisa : SISA
        A fitted ensemble of a model with ``predict_logits`` (e.g. ``mlp-classifier``).
    features : ndarray
        ``(n, d)`` feature rows, in the layout the ensemble was trained on.
    shards : iterable of int, optional
        Only these shard models vote (e.g. to drop the shards a deletion affects). Shards that
        no longer hold any training sample always abstain.
    batch_size : int
        Samples per forward pass.

    Returns
    -------
    ndarray of float64
        ``(n, n_classes)`` probabilities (rows sum to 1); inactive classes get 0. All NaN when no
        shard model votes.
    """
    models = sisa.shard_models
    if not all(hasattr(m, "predict_logits") for m in models):
        raise ValidationError(
            f"{type(models[0]).__name__} cannot classify new samples (no predict_logits); fit "
            "the ensemble with model='mlp-classifier' or another model with predict_logits"
        )
    x = _features_array(features, "features")
    votes = _participants(sisa, shards)
    n_classes = sisa.n_items
    if not votes:
        logger.warning("no shard model votes (all dropped or empty): probabilities are NaN")
        return np.full((len(x), n_classes), np.nan)
    total = torch.zeros(len(x), n_classes, dtype=torch.float64)
    for s in votes:  # one iteration per shard, vectorised over samples
        for start in range(0, len(x), int(batch_size)):
            logits = models[s].predict_logits(x[start:start + int(batch_size)])
            total[start:start + len(logits)] += torch.softmax(logits.double(), dim=1)
    proba = total.numpy() / len(votes)
    inactive = ~np.asarray(sisa.data.item_active)
    if inactive.any():
        proba[:, inactive] = 0.0
        proba /= np.maximum(proba.sum(1, keepdims=True), np.finfo(np.float64).tiny)
    return proba


def predict(sisa: SISA, features: np.ndarray, *, shards: Iterable[int] | None = None
            ) -> np.ndarray:
    """Most probable raw class label of every sample (see :func:`predict_proba`).

    Raises
    ------
    ValidationError
        If no shard model votes.
    """
    proba = predict_proba(sisa, features, shards=shards)
    if len(proba) and np.isnan(proba).all():
        raise ValidationError("no shard model votes (every chosen shard was dropped or is empty); "
                              "choose other shards")
    return sisa.data.item_ids[np.argmax(proba, axis=1)]


def accuracy(
    sisa: SISA,
    features: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    *,
    shards: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Overall and per-class accuracy of the ensemble on labelled samples.

    Parameters
    ----------
    sisa : SISA
        A fitted classification ensemble.
    features : ndarray
        ``(n, d)`` feature rows.
    labels : array-like
        Raw class label of each row (every label must be a class of the ensemble).
    shards : iterable of int, optional
        Only these shard models vote (see :func:`predict_proba`).

    Returns
    -------
    dict
        ``overall`` (float), ``per_class`` (raw label -> float, for the classes present in
        ``labels``), ``n_shards_used`` (int). Accuracies are NaN when no shard model votes.
    """
    y = np.asarray(labels)
    if y.shape != (len(features),):
        raise ValidationError(f"labels must have one entry per feature row ({len(features)}), got "
                              f"shape {y.shape}")
    idx, known = sisa.data.item_map.lookup(y)
    if not known.all():
        raise UnknownIdError("class", np.unique(y[~known]).tolist(),
                             "these labels are not classes of the ensemble; check the labels")
    used = len(_participants(sisa, shards))
    present = np.unique(idx)
    if used == 0:
        per = dict.fromkeys(present.tolist(), float("nan"))
        overall = float("nan")
    else:
        pred = np.argmax(predict_proba(sisa, features, shards=shards), axis=1)
        hit = (pred == idx).astype(np.float64)
        n = np.bincount(idx, minlength=sisa.n_items)
        correct = np.bincount(idx, weights=hit, minlength=sisa.n_items)
        per = {int(c): float(correct[c] / n[c]) for c in present}
        overall = float(hit.mean()) if len(hit) else float("nan")
    ids = sisa.data.item_ids
    return {"overall": overall, "per_class": {ids[c].item(): v for c, v in per.items()},
            "n_shards_used": used}


# ---------------------------------------------------------------------------------- forgetting
def _class_index(sisa: SISA, label: Any) -> int:
    idx, known = sisa.data.item_map.lookup(np.asarray([label]))
    if not known[0]:
        raise UnknownIdError("class", [label], f"classes are {sisa.data.item_ids.tolist()[:20]}")
    return int(idx[0])


def class_samples(sisa: SISA, label: Any) -> np.ndarray:
    """Raw ids of the remaining training samples of class ``label``."""
    data = sisa.data
    c = _class_index(sisa, label)
    return data.user_ids[data.user_idx[data.item_idx == c]]


def affected_shards(sisa: SISA, label: Any = None, *, samples: Iterable[Any] = ()) -> list[int]:
    """Shards that hold training samples of class ``label`` and/or the given sample ids (the
    shards a deletion of them retrains)."""
    data = sisa.data
    hit = np.zeros(len(data), dtype=bool)
    if label is not None:
        hit |= data.item_idx == _class_index(sisa, label)
    sample_list = list(samples)
    if sample_list:
        hit |= data.resolve(users=sample_list).remove
    return np.unique(sisa.assignment[0][hit]).tolist()


def forget_class(sisa: SISA, label: Any, *, extra_samples: Iterable[Any] = ()) -> ForgetReport:
    """Exactly unlearn every training sample of class ``label`` (and ``extra_samples``).

    Only the shards holding one of these samples are retrained, from their last clean
    checkpoint. The class stays in the class space (see the module notes).

    Raises
    ------
    UnknownIdError
        If ``label`` is not a class of the ensemble, or a sample id is unknown.
    ValidationError
        If the class has no training samples left and no extra samples are given.
    """
    ids = class_samples(sisa, label)
    extra = list(extra_samples)
    if len(ids) == 0 and not extra:
        raise ValidationError(f"class {label!r} has no training samples left (already forgotten?); "
                              "nothing to forget")
    return sisa.forget(users=[*ids.tolist(), *extra])


def shard_composition(sisa: SISA) -> np.ndarray:
    """``(n_shards, n_classes)`` counts of the training samples of every class in every shard."""
    data = sisa.data
    return np.bincount(sisa.assignment[0] * data.n_items + data.item_idx,
                       minlength=sisa.n_shards * data.n_items).reshape(sisa.n_shards, data.n_items)


def class_forgetting_report(
    data: ClassificationData,
    forget: Any,
    *,
    extra_samples: Iterable[Any] = (),
    n_shards: int | None = None,
    n_slices: int = 2,
    epochs: int = 20,
    seed: int = 0,
    leakage: str = "high",
    leak_fraction: float = 0.1,
    model_params: dict[str, Any] | None = None,
    device: str = "auto",
    progress: bool | None = False,
) -> dict[str, Any]:
    """Forget class ``forget`` from a class-dominant SISA ensemble and measure accuracy in five
    situations.

    The situations: ``before`` (the full ensemble), ``dropped`` (the shards holding a deleted
    sample abstain, nothing retrained), ``retrained`` (after exact forgetting, which retrains only
    those shards), ``single_model`` (one ``mlp-classifier`` on all training data) and
    ``full_retrain`` (one model trained from scratch without the deleted samples).

    Parameters
    ----------
    data : ClassificationData
        Training and test samples (e.g. :func:`load_digits_data`).
    forget : int or str
        The class label to forget.
    extra_samples : iterable of sample ids
        Further samples to forget in the same request.
    n_shards : int, optional
        Shards (default: one per class).
    n_slices, epochs, seed : int
        SISA slices per shard, epochs, and the run seed (also of the single models).
    leakage, leak_fraction
        Parameters of the ``class-dominant`` sharder.
    model_params : dict, optional
        Parameters of ``mlp-classifier``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress : bool or None
        Show progress bars.

    Returns
    -------
    dict
        ``accuracy`` (situation -> :func:`accuracy` dict), ``affected_shards``,
        ``shards_retrained``, ``slices_retrained``, ``work_fraction``, ``records_removed``,
        ``composition`` (shard × class counts before forgetting) and timings in seconds:
        ``fit_seconds``, ``forget_seconds``, ``single_fit_seconds``, ``full_retrain_seconds``.
    """
    common = dict(model="mlp-classifier", n_slices=n_slices, epochs=epochs, seed=seed,
                  model_params=dict(model_params or {}), device=device, progress=progress)
    sisa = SISA(sharder="class-dominant", n_shards=n_shards or data.n_classes,
                sharder_params={"leakage": leakage, "leak_fraction": leak_fraction}, **common)
    t0 = time.perf_counter()
    sisa.fit(data.train)
    fit_seconds = time.perf_counter() - t0
    x, y = data.test_features, data.test_labels
    extra = list(extra_samples)
    gone = [*class_samples(sisa, forget).tolist(), *extra]
    composition = shard_composition(sisa)
    affected = affected_shards(sisa, forget, samples=extra)
    acc = {"before": accuracy(sisa, x, y)}
    acc["dropped"] = accuracy(sisa, x, y, shards=sorted(set(range(sisa.n_shards)) - set(affected)))
    report = forget_class(sisa, forget, extra_samples=extra)
    acc["retrained"] = accuracy(sisa, x, y)

    def single(train: Interactions) -> tuple[dict[str, Any], float]:
        one = SISA(sharder="random-interaction", n_shards=1, **{**common, "n_slices": 1})
        t = time.perf_counter()
        one.fit(train)
        return accuracy(one, x, y), time.perf_counter() - t

    acc["single_model"], single_seconds = single(data.train)
    acc["full_retrain"], full_seconds = single(data.train.without(users=gone))
    return {
        "forget": forget.item() if isinstance(forget, np.generic) else forget,
        "n_extra_samples": len(extra),
        "n_shards": sisa.n_shards,
        "n_slices": n_slices,
        "leakage": leakage,
        "leak_fraction": leak_fraction,
        "records_removed": report.records_removed,
        "affected_shards": affected,
        "shards_retrained": report.shards_retrained,
        "slices_retrained": report.slices_retrained,
        "work_fraction": report.work_fraction,
        "composition": composition.tolist(),
        "accuracy": acc,
        "fit_seconds": fit_seconds,
        "forget_seconds": report.seconds,
        "single_fit_seconds": single_seconds,
        "full_retrain_seconds": full_seconds,
    }
