"""A loaded model applied to many images, streaming, and the predictions CSV it fills.

Images come from files, decoded by ``prepare``'s own rules into the
model's image shape and channel mode (:func:`file_decoder`), or from a split
of an image store. Either way they go through the model a batch at a time,
and each batch's predictions come out as :class:`PredictedRows`, in input
order, so memory stays flat however many images there are:

- :func:`iter_file_predictions`: files decoded in a process pool (the one
  ``prepare`` uses), a few chunks ahead of the forward pass;
- :func:`iter_store_predictions`: an image store's split, read ahead by a
  thread as ``extract`` reads it;
- :func:`iter_distributed_file_predictions`: shards of files on Dask
  workers, each of which loads the model once; rows come back in order.

:class:`PredictionsCSV` writes the rows: ``path`` (or ``id``), ``predicted``
(the class name), one column per class (``probability:<class>`` or
``decision_value:<class>``) and ``reason`` for a file that could not be
read (its other cells empty).
"""

import collections
import csv
import dataclasses
import functools
import itertools
import json
import threading
from pathlib import Path

import numpy as np

from plumbing.atomic import atomic_output
from plumbing.errors import FeatpipeError, worker_result

KEY_COLUMNS = ("path", "id")
SCORE_PREFIXES = {"probability": "probability", "decision value": "decision_value"}
SHARD_FILES = 256  # files per Dask task
SHARDS_AHEAD = 2  # tasks per worker waiting or running at once
HEADER_BYTES = 1 << 16  # read to tell whether an existing file is a predictions CSV


@dataclasses.dataclass
class PredictedRows:
    """The predictions of consecutive inputs.

    Attributes
    ----------
    keys : list of str, each input's path or id
    labels : ndarray of shape (n,), int64, the predicted class index; -1 where unreadable
    scores : ndarray of shape (n, n_classes), float32; NaN where unreadable
    reasons : list of str, why an input could not be read; ``""`` for those read
    """

    keys: list
    labels: np.ndarray
    scores: np.ndarray
    reasons: list

    @property
    def read(self):
        return sum(1 for reason in self.reasons if not reason)


def file_decoder(image_shape):
    """``decode(path) -> (pixels, None) or (None, reason)``: prepare's rules, into images of ``image_shape``.

    Parameters
    ----------
    image_shape : tuple of (size, size, channels)
        A model's :attr:`~classifiers.ImageClassifier.image_shape`: what its
        image store holds (prepare makes square images).
    """
    from sources.folder import read_or_reason

    height, width, channels = image_shape
    if height != width:
        raise FeatpipeError(
            f"the model takes {height}x{width} images; prepare's rules make square ones, so image files can't be "
            f"decoded for it: give an image store of that shape instead"
        )
    return functools.partial(read_or_reason, root=Path(), size=int(height), channel_mode={1: "L", 3: "RGB"}[channels])


def predict_decoded(model, keys, decoded):
    """:class:`PredictedRows` of ``keys`` from their ``(pixels, reason)`` pairs, the readable ones in one batch."""
    readable = [index for index, (pixels, _) in enumerate(decoded) if pixels is not None]
    labels = np.full(len(keys), -1, np.int64)
    scores = np.full((len(keys), len(model.classes_)), np.nan, np.float32)
    if readable:
        found, found_scores = model.predict_with_scores(np.stack([decoded[index][0] for index in readable]))
        labels[readable], scores[readable] = found, found_scores
    return PredictedRows(list(keys), labels, scores, [reason or "" for _, reason in decoded])


def iter_file_predictions(model, paths, *, keys=None, batch_size=32, workers=None):
    """:class:`PredictedRows` of image files, ``batch_size`` files at a time, in order.

    Parameters
    ----------
    model : classifiers.ImageClassifier
    paths : sequence of path-like
    keys : sequence of str or None, what the rows call each file (default: the paths as given)
    batch_size : int
    workers : int or None, decoding processes (``None``: one per core); see :func:`sources.folder.decoding_map`
    """
    from storage.streaming import read_ahead
    from sources.folder import decoding_map

    keys = [str(path) for path in paths] if keys is None else list(keys)
    decode = file_decoder(model.image_shape)
    with decoding_map(workers, len(paths)) as mapped:
        decoded = mapped(decode, [str(path) for path in paths])
        batches = ((start, list(itertools.islice(decoded, batch_size))) for start in range(0, len(keys), batch_size))
        # Decoded a few batches ahead on a thread: Pillow decodes and resizes off the GIL, beside the forward pass.
        for start, batch in read_ahead(batches, name="featpipe-decoder"):
            yield predict_decoded(model, keys[start : start + batch_size], batch)


def iter_store_predictions(model, store_path, split="test", *, batch_size=32):
    """:class:`PredictedRows` of an image store's ``split`` (keys: its ids), read ahead as ``extract`` reads it.

    Refuses, in one line, a store whose images have another shape than the model's.
    """
    from storage.chunkio import CodecPool
    from storage.image_store import ImageStore
    from storage.streaming import iter_image_batches

    with ImageStore(store_path) as store, CodecPool() as pool:
        check_store_shape(model, store.image_shape(split), store_path)
        ids = store.ids(split)
        for start, images in iter_image_batches(store, split, batch_size=batch_size, pool=pool):
            labels, scores = model.predict_with_scores(images)
            yield PredictedRows(ids[start : start + len(images)], labels, scores, [""] * len(images))


def check_store_shape(model, image_shape, where):
    """Refuse images of another shape or channel mode than the model was trained on."""
    if tuple(image_shape) != model.image_shape:
        def words(shape):
            return f"{'x'.join(map(str, shape))} ({'grayscale' if shape[-1] == 1 else 'RGB'})"

        raise FeatpipeError(
            f"model {model.name} was trained on {words(model.image_shape)} images; {where} holds {words(image_shape)}: "
            f"predict its image files instead (they are decoded to the model's shape), or retrain on this store"
        )


def count_rows(batches, progress=None):
    """Pass ``batches`` through, updating ``progress`` (a tqdm bar, or None) by each batch's rows."""
    for rows in batches:
        if progress is not None:
            progress.update(len(rows.keys))
        yield rows


# --- on Dask --------------------------------------------------------------------------------


def iter_distributed_file_predictions(client, model_folder, load_options, paths, *, keys=None, shard_files=SHARD_FILES):
    """:class:`PredictedRows` of image files computed on Dask workers, one shard of files per task, in order.

    Each worker loads the model once (:func:`worker_model`) and keeps it for
    every shard it gets; at most :data:`SHARDS_AHEAD` shards per worker are
    out at once, so neither the client nor the cluster holds more than a few
    shards of rows. Workers need the model folder and the files at the same
    paths as the client (a shared filesystem).

    Parameters
    ----------
    client : distributed.Client, checked (:func:`plumbing.cluster.dask_client`)
    model_folder : path-like
    load_options : dict, :func:`classifiers.load_model`'s keywords (batch_size, device, precision)
    paths : sequence of path-like
    keys : sequence of str or None, the rows' names (default: the paths as given)
    shard_files : int, files per task
    """
    from distributed import as_completed

    keys = [str(path) for path in paths] if keys is None else list(keys)
    folder = str(Path(model_folder).absolute())
    starts = range(0, len(keys), shard_files)

    def submit(start):
        stop = min(start + shard_files, len(keys))
        files = [str(Path(path).absolute()) for path in paths[start:stop]]
        return client.submit(predict_file_shard, folder, load_options, files, keys[start:stop], pure=False)

    # Shards out (running, or done and waiting for an earlier one) stay within the window.
    window = SHARDS_AHEAD * max(1, len(client.scheduler_info()["workers"]))
    todo, joined = iter(starts), InOrder(starts)
    pending = {submit(start): start for start in itertools.islice(todo, window)}
    finished = as_completed(list(pending), loop=client.loop)
    try:
        for future in finished:
            yield from joined.add(pending.pop(future), worker_result(future))
            for start in itertools.islice(todo, max(0, window - len(pending) - len(joined.waiting))):
                new = submit(start)
                pending[new] = start
                finished.add(new)
    finally:
        client.cancel(list(pending))


class InOrder:
    """Results that arrive in any order, handed on in the order of ``starts``.

    ``add(start, result)`` returns the results now due, in order; ``waiting``
    holds those that came before their turn.
    """

    def __init__(self, starts):
        self._expected = iter(starts)
        self._wanted = next(self._expected, None)
        self.waiting = {}

    def add(self, start, result):
        self.waiting[start] = result
        due = []
        while self._wanted is not None and self._wanted in self.waiting:
            due.append(self.waiting.pop(self._wanted))
            self._wanted = next(self._expected, None)
        return due


_loaded = {}
_loading = threading.Lock()


def worker_model(model_folder, load_options):
    """This process's copy of the model in ``model_folder``: loaded once, kept for every shard.

    Only the latest is kept, so a long-lived cluster serving one model after
    another holds one at a time.
    """
    from classifiers.loading import load_model

    key = json.dumps([model_folder, load_options], sort_keys=True, default=str)
    with _loading:
        if key not in _loaded:
            _loaded.clear()
            _loaded[key] = load_model(model_folder, **load_options)
        return _loaded[key]


def predict_file_shard(model_folder, load_options, paths, keys):
    """One Dask task: decode ``paths`` by prepare's rules and predict them with the worker's model."""
    model = worker_model(model_folder, load_options)
    decode = file_decoder(model.image_shape)
    batch_size = model.batch_size
    parts = [
        predict_decoded(model, keys[start : start + batch_size], [decode(path) for path in paths[start : start + batch_size]])
        for start in range(0, len(paths), batch_size)
    ]
    return PredictedRows(
        keys=[key for part in parts for key in part.keys], labels=np.concatenate([part.labels for part in parts]),
        scores=np.concatenate([part.scores for part in parts]), reasons=[reason for part in parts for reason in part.reasons],
    )  # fmt: skip


# --- the CSV ------------------------------------------------------------------------------


def csv_header(key_column, class_names, score_kind):
    """``[key_column, "predicted", "<probability|decision_value>:<class>"..., "reason"]``."""
    prefix = SCORE_PREFIXES[score_kind]
    return [key_column, "predicted", *(f"{prefix}:{name}" for name in class_names), "reason"]


def is_predictions_csv(path):
    """Whether ``path`` is a file whose first line is a predictions CSV's header (so it may be replaced)."""
    try:
        with open(path, newline="", encoding="utf-8") as file:
            header = next(csv.reader([file.readline(HEADER_BYTES)]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return (
        len(header) >= 4 and header[0] in KEY_COLUMNS and header[1] == "predicted" and header[-1] == "reason"
        and all(column.split(":", 1)[0] in SCORE_PREFIXES.values() and ":" in column for column in header[2:-1])
    )


class PredictionsCSV:
    """Write predictions to ``path`` as they come, aside, renamed onto ``path`` only when all are in.

    Use as a context manager; :meth:`write` takes each :class:`PredictedRows`.
    An error in the block leaves nothing at ``path`` (an earlier file there
    stays as it was).

    Parameters
    ----------
    path : path-like
    key_column : {"path", "id"}
    class_names : list of str, indexed by class index
    classes : ndarray of shape (n_classes,), the class index of each score column
    score_kind : {"probability", "decision value"}
    """

    def __init__(self, path, key_column, class_names, classes, score_kind):
        self.path = Path(path)
        self.class_names = list(class_names)
        self.header = csv_header(key_column, [self.class_names[int(label)] for label in classes], score_kind)
        self.counts = collections.Counter()
        self.unreadable = []
        self._output = None

    def __enter__(self):
        self._output = atomic_output(self.path)
        aside = self._output.__enter__()
        self._file = open(aside, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.header)
        return self

    def write(self, rows):
        """Append ``rows`` (PredictedRows) and count them."""
        for key, label, scores, reason in zip(rows.keys, rows.labels, rows.scores, rows.reasons):
            if reason:
                self.unreadable.append((key, reason))
                self._writer.writerow([key, "", *([""] * len(scores)), reason])
                continue
            name = self.class_names[int(label)]
            self.counts[name] += 1
            self._writer.writerow([key, name, *(np.format_float_positional(value, unique=True, trim="-") for value in scores), ""])

    def __exit__(self, kind, error, trace):
        self._file.close()
        return self._output.__exit__(kind, error, trace)

    @property
    def rows_read(self):
        return sum(self.counts.values())
