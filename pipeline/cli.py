"""The ``featpipe`` command: one click group, one subcommand per stage.

Mistakes a user can make (bad params, missing files, unknown names) end with
one line on stderr and exit code 2, never a traceback; ``-v`` shows more.
"""

import logging
import sys

import click

from plumbing.errors import FeatpipeError
from pipeline import __version__
from pipeline.backbones import backbones
from pipeline.baseline import baseline
from pipeline.curves import curves
from pipeline.explain import explain
from pipeline.extract import extract
from pipeline.finetune import finetune
from pipeline.predict import predict
from pipeline.prepare import prepare
from pipeline.report import report
from pipeline.scratch import scratch
from pipeline.train import train

USAGE_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featpipe")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose, quiet):
    """What are a pretrained CNN's features worth? Prepare images, extract
    features, train shallow learners and CNNs, draw learning curves, explain
    every model, report them against a pixel baseline, and apply any of them
    to new images (predict)."""
    configure_logging(verbose, quiet)


def configure_logging(verbose=0, quiet=False):
    from plumbing.backend import show_tensorflow_logs

    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    show_tensorflow_logs(verbose > 0 and not quiet)  # TensorFlow's start-up lines only under -v
    for name in ("pipeline", "features", "classifiers"):
        logging.getLogger(name).setLevel(level)


for command in (prepare, extract, baseline, train, scratch, finetune, curves, explain, report, predict, backbones):
    cli.add_command(command)


def run(command, args=None, prog_name=None):
    """Run a click command, turning user mistakes into one line and exit code 2."""
    try:
        command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except FeatpipeError as error:
        _fail(str(error))
    except click.exceptions.Abort:
        _fail("aborted", code=130)
    except click.ClickException as error:
        _fail(error.format_message())
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume", code=130)
    except OSError as error:
        # Full disks, unwritable folders, vanished files: the user's to fix.
        detail = f"{error.strerror}: {error.filename}" if error.filename else str(error)
        _fail(detail)
    return 0


def _fail(message, code=USAGE_ERROR):
    click.echo(f"featpipe: error: {message}", err=True)
    sys.exit(code)


def main():
    sys.exit(run(cli, prog_name="featpipe"))


def extract_main():
    """The ``extract`` console script: ``extract --backbone vgg16`` outside DVC."""
    sys.exit(run(extract, prog_name="extract"))
