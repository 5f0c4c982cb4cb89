"""Argument parsing whose errors follow the house rule: one line `error: ...`, exit code 2."""
import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a missing or malformed flag is one line naming the flag, not a usage dump."""

    def error(self, message):
        print(f"error: {self.prog}: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)
