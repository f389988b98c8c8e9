"""The `lmanet` command's subcommands; each module exports ``add_parser(subparsers)`` and ``run(args) -> int``."""
