"""The one exception type for mistakes a user can make or fix."""


class FeatpipeError(Exception):
    """Bad input, params, or files: something the user can correct.

    The CLI prints the message as one line and exits with code 2, so the
    message must say what was expected and what was found.
    """


def first_line(error):
    """The first line of ``error``'s message, or its type's name when the message is empty.

    Libraries put whole stack dumps in their messages; one line is what the CLI prints.
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def worker_result(future, where="a Dask worker"):
    """``future.result()``; a FeatpipeError raised on a Dask worker comes back saying where it ran.

    Without a traceback: the worker's stack says nothing the user can act on.
    """
    try:
        return future.result()
    except FeatpipeError as error:
        raise FeatpipeError(f"on {where}: {error}") from None
