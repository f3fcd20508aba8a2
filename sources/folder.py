"""A folder of labelled images: one sub-folder per class, or ``train/`` and ``test/`` each with one.

Every file under a class folder (at any depth) is tried with Pillow; one that
cannot be read is skipped with its reason. Hidden files and folders (a leading
dot), ``__MACOSX``, ``Thumbs.db`` and ``desktop.ini`` are ignored. Ids are
paths relative to the folder given, with ``/`` separators.

Images are made square by :mod:`sources.decode`. The store's
channels: 1 when every image read is grayscale, else 3 (grayscale images are
then repeated into three equal channels).
"""

import collections
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from plumbing.errors import FeatpipeError
from sources import subsets
from sources.dataset import SPLITS, Dataset, existing_folder, split_from_rows
from sources.decode import UnreadableImage, read_image, with_channels
from sources.registry import register_source

NAME = "folder"
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
SHOWN_IN_ERRORS = 3
DECODE_CHUNK = 32  # files a decoding process takes at a time
CHUNKS_AHEAD = 4  # chunks decoded ahead of the consumer, per process

log = logging.getLogger(__name__)


@register_source(NAME)
def load_folder(path, settings):
    """Read every image under ``path``, resized to ``settings.image_size``.

    Returns
    -------
    Dataset with images of shape (image_size, image_size, 1 or 3), its
    unreadable files in ``skipped``, and both splits in a seeded random order.
    """
    if path is None:
        raise FeatpipeError(f"{NAME}: needs data.path (--path): a folder with one sub-folder of images per class")
    root = existing_folder(NAME, path)
    class_names, entries = list_images(root)
    ids = [relative for relative, _, _ in entries]
    pixels, readable, skipped = read_images(root, ids, settings)
    check_bad_fraction(skipped, len(ids), settings.max_bad_fraction, root)
    images = stack_images(pixels)
    labels = np.array([entries[i][1] for i in readable], dtype=np.int64)
    kept_ids = [ids[i] for i in readable]
    split_of = [entries[i][2] for i in readable]
    presplit = any(split is not None for _, _, split in entries)
    rows = split_rows(labels, split_of if presplit else None, class_names, settings, root)
    kept_ids = [storable_name(name) for name in kept_ids]
    splits = {name: split_from_rows(images, labels, kept_ids, rows[name]) for name in SPLITS}
    skipped = [(storable_name(name), reason) for name, reason in skipped]
    return Dataset(NAME, [storable_name(name) for name in class_names], splits, skipped=skipped, location=str(root))


def storable_name(name):
    """A file or folder name as UTF-8 text: bytes that aren't UTF-8 become ``\\xNN`` escapes.

    Python hands such names over with lone surrogates (PEP 383), which
    neither HDF5's UTF-8 strings nor a fingerprint can hold.
    """
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def list_images(root):
    """Find the classes and candidate files under ``root``.

    Returns
    -------
    class_names : sorted list of str
    entries : list of (relative path, label, split) with split ``"train"``,
        ``"test"`` or None (no train/ and test/ folders: split later).
    """
    folders = visible_folders(root)
    has_split = {"train", "test"} & set(folders)
    if len(has_split) == 1:
        raise FeatpipeError(
            f"{NAME}: {root} has {has_split.pop()}/ but not the other; give train/ and test/, "
            f"or one folder per class and let data.test_fraction hold out a share"
        )
    layout = {split: root / split for split in SPLITS} if has_split else {None: root}
    class_folders = {split: visible_folders(top) for split, top in layout.items()}
    class_names = sorted(set().union(*class_folders.values()))
    if len(class_names) < 2:
        where = " and ".join(f"{top}" for top in layout.values())
        raise FeatpipeError(
            f"{NAME}: found {len(class_names)} class folder(s) in {where} ({', '.join(class_names) or 'none'}); "
            f"need at least two, one sub-folder of images per class"
        )
    _warn_about_extras(root, folders, layout)
    entries = [
        (path, label, split)
        for split, top in layout.items()
        for label, name in enumerate(class_names)
        if name in class_folders[split]
        for path in files_under(root, top / name)
    ]
    return class_names, entries


def visible_folders(folder):
    """Sorted names of the sub-folders of ``folder`` that are not hidden or ignored."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not is_ignored(entry.name))


def is_ignored(name):
    return name.startswith(".") or name in IGNORED_NAMES


def files_under(root, folder):
    """Paths (relative to ``root``, ``/``-separated) of every visible file under ``folder``, sorted."""
    found = []
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not is_ignored(name))
        relative = Path(current).relative_to(root)
        found.extend((relative / name).as_posix() for name in sorted(files) if not is_ignored(name))
    return found


def _warn_about_extras(root, folders, layout):
    extra = [name for name in folders if name not in SPLITS] if None not in layout else []
    loose = [entry.name for entry in os.scandir(root) if entry.is_file() and not is_ignored(entry.name)]
    if extra:
        log.warning("%s: ignoring folders beside train/ and test/: %s", root, ", ".join(extra))
    if loose:
        log.warning("%s: ignoring %d file(s) outside the class folders, e.g. %s", root, len(loose), loose[0])


def read_images(root, ids, settings):
    """Decode every file in ``ids``; stop early once too many fail for ``settings.max_bad_fraction``.

    The files are decoded and resized by ``settings.workers`` processes at
    once (a GPU box's folder of photos is worth every core), and come back
    in order, so the result is the same however many there are.

    Returns
    -------
    pixels : list of ndarray, each (size, size) or (size, size, 3)
    readable : list of int, the positions in ``ids`` that ``pixels`` holds
    skipped : list of (id, reason)
    """
    pixels, readable, skipped = [], [], []
    bar = tqdm(total=len(ids), desc="reading images", unit="img", disable=None if settings.progress else True)
    read = functools.partial(read_or_reason, root=root, size=settings.image_size)
    with bar, decoding_map(settings.workers, len(ids)) as decode:
        for position, (relative, (image, reason)) in enumerate(zip(ids, decode(read, ids))):
            bar.update()
            if reason is None:
                pixels.append(image)
                readable.append(position)
            else:
                skipped.append((relative, reason))
                check_bad_fraction(skipped, len(ids), settings.max_bad_fraction, root, finished=False)
    return pixels, readable, skipped


def read_or_reason(relative, root, size, channel_mode=None):
    """``(pixels, None)``, or ``(None, reason)`` for a file that can't be read: what a decoding process returns.

    ``relative`` is the file's path under ``root``; ``size`` and
    ``channel_mode`` are :func:`sources.decode.read_image`'s.
    """
    try:
        return read_image(Path(root) / relative, size, channel_mode), None
    except UnreadableImage as error:
        return None, str(error)


@contextlib.contextmanager
def decoding_map(workers, count):
    """A ``map`` that runs in ``workers`` processes (``None``: one per core), in order; the builtin one for 1.

    At most a few chunks per process are decoded ahead of the consumer, so
    memory stays bounded however many files there are, and a consumer that
    works on each result meanwhile (a forward pass) overlaps the decoding.
    """
    workers = min(workers or os.cpu_count() or 1, max(1, count // DECODE_CHUNK))
    if workers <= 1:
        yield map
        return
    # forkserver: children start clean, whatever threads this process runs.
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            yield lambda function, items: _bounded_map(pool, function, items, ahead=CHUNKS_AHEAD * workers)
        finally:
            pool.shutdown(cancel_futures=True)


def _bounded_map(pool, function, items, ahead):
    """``map(function, items)`` on ``pool``, :data:`DECODE_CHUNK` items a task, at most ``ahead`` tasks waiting."""
    chunks = _chunks(items, DECODE_CHUNK)
    waiting = collections.deque(pool.submit(_map_chunk, function, chunk) for chunk in itertools.islice(chunks, ahead))
    while waiting:
        results = waiting.popleft().result()
        waiting.extend(pool.submit(_map_chunk, function, chunk) for chunk in itertools.islice(chunks, 1))
        yield from results


def _chunks(items, size):
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _map_chunk(function, chunk):
    return [function(item) for item in chunk]


def check_bad_fraction(skipped, total, max_bad_fraction, root, finished=True):
    """Stop if more than ``max_bad_fraction`` of ``total`` files were skipped; no store is written then."""
    if not skipped or len(skipped) / total <= max_bad_fraction:
        return
    shown = "; ".join(f"{path} ({reason})" for path, reason in skipped[:SHOWN_IN_ERRORS])
    more = f"; and {len(skipped) - SHOWN_IN_ERRORS} more" if len(skipped) > SHOWN_IN_ERRORS else ""
    count = f"{len(skipped)}" if finished else f"at least {len(skipped)}"
    raise FeatpipeError(
        f"{NAME}: {count} of {total} files in {root} cannot be read, more than max_bad_fraction="
        f"{max_bad_fraction} allows: {shown}{more}. Fix or remove them, or raise data.max_bad_fraction"
    )


def stack_images(pixels):
    """ndarray of shape (n, size, size, 1) if every image is grayscale, else (n, size, size, 3)."""
    if not pixels:
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    channels = 1 if all(image.ndim == 2 for image in pixels) else 3
    return np.stack([with_channels(image, channels) for image in pixels])


def split_rows(labels, split_of, class_names, settings, root):
    """Row indices of each split: from ``split_of`` (``"train"``/``"test"`` per row) if given, else a
    stratified seeded split. Stops when a class has no readable image in a split (or too few to split).
    """
    if split_of is not None:
        rows = {split: np.flatnonzero(np.array(split_of) == split) for split in SPLITS}
        rows = {split: found[subsets.shuffled(len(found), settings.seed, split)] for split, found in rows.items()}
        for split in SPLITS:
            _check_classes(labels[rows[split]], class_names, f"{root}/{split}")
        return rows
    _check_classes(labels, class_names, str(root), minimum=2)
    if settings.test_fraction <= 0:
        raise FeatpipeError(
            f"{NAME}: test_fraction={settings.test_fraction} holds nothing out, and {root} has no train/ and test/ "
            f"folders; set a test fraction in (0, 1) or give train/ and test/"
        )
    train, test = subsets.stratified_split(labels, settings.test_fraction, settings.seed)
    return {"train": train, "test": test}


def _check_classes(labels, class_names, where, minimum=1):
    counts = np.bincount(labels, minlength=len(class_names))
    short = [f"{name!r} has {count}" for name, count in zip(class_names, counts) if count < minimum]
    if short:
        need = "one" if minimum == 1 else f"{minimum} (one to train, one to test)"
        raise FeatpipeError(
            f"{NAME}: too few readable images in {where}: {', '.join(short)}; each class needs at least {need}"
        )
