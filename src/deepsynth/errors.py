"""The one exception type a user sees as a single clear line (the CLI prints it, exit code 2)."""


class DeepSynthError(Exception):
    """Bad input or an unusable file: the message is one line meant for a person."""
