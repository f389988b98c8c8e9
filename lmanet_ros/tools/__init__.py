"""The `lmanet` command's subcommands.

Each module exports ``add_parser(subparsers)`` and ``run(args) -> int``.
"""
