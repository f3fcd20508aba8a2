"""The CNNs' training as DVC shows it: DVCLive's files, written as each epoch ends.

``scratch`` and ``finetune`` log every epoch's loss and accuracy (training
and validation) and, at the end, the test accuracy, with
:class:`dvclive.Live` into ``reports/dvclive/<model>/``: ``metrics.json``
(``dvc metrics show``, ``dvc exp show``) and ``plots/metrics/*.tsv`` (``dvc
plots show``, the editor's live plots during ``dvc exp run``), both declared
in dvc.yaml. ``dvclive.keras.DVCLiveCallback`` would do the logging, but it
imports TensorFlow, and the CNNs run on any Keras backend; the callback here
is its two methods on plain Keras.
"""

import contextlib

from plumbing.backend import load_keras


@contextlib.contextmanager
def training_log(folder):
    """A :class:`dvclive.Live` writing into ``folder`` (emptied first), ended on exit.

    DVCLive leaves dvc.yaml alone (the stages declare its files) and saves no
    experiment of its own: ``dvc exp run`` saves the run.
    """
    from dvclive import Live

    with Live(dir=str(folder), resume=False, report=None, save_dvc_exp=False, dvcyaml=None) as live:
        yield live


def epoch_logger(live):
    """A Keras callback that logs each epoch's metrics (Keras' names: ``loss``, ``val_accuracy``...) to ``live``.

    Phases of one model (fine-tuning's head, then its blocks) continue the
    same steps.
    """
    keras = load_keras()

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for name, value in (logs or {}).items():
                live.log_metric(name, float(value))
            live.next_step()

    return EpochLogger()
