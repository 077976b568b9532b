"""The exception types a user sees as a single clear line (the CLI prints it, exit code 2)."""


class DeepSynthError(Exception):
    """Bad input or an unusable file: the message is one line meant for a person."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (the cli's handler): every path that cleans up
    after a Ctrl-C cleans up after it too."""
