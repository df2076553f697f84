"""The ``minideepseek`` command line. Each subcommand is one function below."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, ModelConfig, PRESETS
from .params import count_parameters


def load_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig.from_json(args.config) if args.config else ModelConfig.from_preset(args.preset)


def info(args: argparse.Namespace) -> None:
    """Print the parameter table of a preset or a config.json."""
    config = load_config(args)
    source = args.config or f"preset {args.preset}"
    print(f"DeepSeek-V3 architecture from {source}\n")
    print(count_parameters(config).table())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minideepseek", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("info", help="parameter counts, KV-cache and weight memory of a model")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", default="v3-671b", choices=sorted(PRESETS))
    source.add_argument("--config", help="an official inference JSON or a hub config.json")
    p.set_defaults(func=info)

    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as error:
        sys.exit(f"minideepseek {args.command}: {error}")


if __name__ == "__main__":
    main()
