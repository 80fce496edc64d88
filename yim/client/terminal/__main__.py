"""``python -m yim.client.terminal COMMAND …``: the terminal commands alone (chat, send,
history, register), without the server's."""

from __future__ import annotations

import argparse
import logging
import sys

from yim.client.terminal.cli import add_terminal_parsers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yim.client.terminal", description="the yim terminal client")
    sub = parser.add_subparsers(dest="command", required=True)
    add_terminal_parsers(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
