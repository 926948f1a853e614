"""The one exception type that the CLI turns into a single-line message and a non-zero exit."""


class TacleanerError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Library code raises this for anything a user can fix (a missing file, an unknown name, a
    malformed CSV row); the CLI prints ``error: <message>`` and exits with status 2 instead of a
    traceback. Programming errors stay ordinary exceptions.
    """


class SharedError(TacleanerError):
    """Rank 0's error, raised on the other ranks of a multi-process job too (they stop with it
    instead of waiting); only rank 0 prints it and exits non-zero, the others exit 0 so that
    torchrun does not stop rank 0 before it has printed."""
