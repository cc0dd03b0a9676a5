"""The one exception type a user should ever see from aejax's command-line tools."""


class AejaxError(Exception):
    """A user-facing error whose message is one line that says what to do.

    The CLIs catch it and print ``error: <message>`` instead of a traceback; anything
    else that escapes is a bug in aejax.
    """
