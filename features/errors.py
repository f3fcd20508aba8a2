"""The one exception type for mistakes a user can make or fix."""


class FeatpipeError(Exception):
    """Bad input, params, or files: something the user can correct.

    The CLI prints the message as one line and exits with code 2, so the
    message must say what was expected and what was found.
    """
