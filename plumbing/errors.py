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
