"""builder: build, check and version the data that makes language models safer."""

__version__ = "0.1.0"

# True when builder runs as its own command (the CLI sets it). Only then may validate spawn worker
# processes on its own: spawning imports __main__ again, harmless for the CLI's entry point but not for
# a user's script without an `if __name__ == "__main__"` guard.
RUNNING_AS_CLI = False
