"""Command line of the X-NeMo engine: ``python -m reenactment.engine COMMAND ...``.

Commands are registered in :data:`COMMANDS`; each entry adds one sub-parser and sets a
``handler(args) -> exit code``. Heavy libraries (torch, diffusers) are imported inside the
handlers so that ``--help`` stays instant. To add a command (e.g. ``animate`` or ``train``),
write a ``register_<name>(subparsers)`` function and append it to :data:`COMMANDS`.

``inspect-checkpoint`` exit codes: 0 every file is compatible, 1 at least one is not (or is not
recognised), 2 an input could not be read (missing, corrupt, unsafe pickle, bad config file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_INCOMPATIBLE = 1
EXIT_UNREADABLE = 2

SubParsers = Any  # argparse._SubParsersAction is private; keep the annotation honest but loose.


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{size:.1f} GB"  # unreachable, keeps type checkers calm


def _print_report(report: Any, max_listed: int) -> None:
    from .loading import FILE_DESCRIPTIONS

    print(report.path)
    if report.kind is None:
        print("  looks like:  nothing known (no key in common with the X-NeMo files)")
    else:
        print(f"  looks like:  {report.kind} - {FILE_DESCRIPTIONS[report.kind]}")
    print(f"  tensors:     {len(report.layout)} ({report.num_elements:,} elements)")
    dtypes = ", ".join(f"{name} x {count}" for name, count in sorted(report.dtypes.items()))
    print(f"  dtypes:      {dtypes or '-'}")
    print(f"  size:        {_human_bytes(report.file_bytes)}")
    if report.compatible:
        print("  compatible:  yes")
    else:
        print("  compatible:  NO")
        if report.report is not None:
            for line in report.report.describe(limit=max_listed):
                print(f"    {line}")
    for note in report.notes:
        print(f"  note:        {note}")


def run_inspect_checkpoint(args: argparse.Namespace) -> int:
    """Handler of ``inspect-checkpoint``."""
    from .loading import (
        CheckpointError,
        UnreadableCheckpointError,
        find_checkpoint_files,
        inspect_checkpoint,
        load_unet_additional_kwargs_file,
        load_unet_config_file,
        official_file_layouts,
    )

    try:
        unet_config = load_unet_config_file(args.unet_config) if args.unet_config else None
        extra = (
            load_unet_additional_kwargs_file(args.unet_additional_kwargs)
            if args.unet_additional_kwargs
            else None
        )
        expected = official_file_layouts(unet_config, extra)
    except (CheckpointError, ValueError, TypeError, NotImplementedError) as exc:
        print(f"error: invalid network configuration: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE

    exit_code = EXIT_OK
    for raw in args.paths:
        path = Path(raw)
        if not path.exists():
            print(f"error: {path}: no such file or folder", file=sys.stderr)
            exit_code = EXIT_UNREADABLE
            continue
        files = find_checkpoint_files(path)
        if not files:
            print(f"error: {path}: no checkpoint files (.pth/.safetensors) found", file=sys.stderr)
            exit_code = EXIT_UNREADABLE
            continue
        for file in files:
            try:
                report = inspect_checkpoint(file, expected)
            except UnreadableCheckpointError as exc:
                print(f"error: cannot read {exc}", file=sys.stderr)
                exit_code = EXIT_UNREADABLE
                continue
            _print_report(report, args.max_listed)
            if not report.compatible and exit_code == EXIT_OK:
                exit_code = EXIT_INCOMPATIBLE
    return exit_code


def register_inspect_checkpoint(subparsers: SubParsers) -> None:
    """Add the ``inspect-checkpoint`` command."""
    parser = subparsers.add_parser(
        "inspect-checkpoint",
        help="describe checkpoint files and check them against the X-NeMo networks",
        description=(
            "For each .pth/.safetensors file (or every such file below a folder): which official "
            "X-NeMo file it looks like, key/element counts, dtypes, size, and whether its keys and "
            "shapes fit the networks. Exit code 0 if all fit, 1 otherwise, 2 on unreadable input."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files or folders")
    parser.add_argument(
        "--unet-config",
        metavar="FILE",
        help="SD UNet config.json to size the UNets (default: official sd-image-variations)",
    )
    parser.add_argument(
        "--unet-additional-kwargs",
        metavar="FILE",
        help="X-NeMo unet_additional_kwargs as JSON, or the official inference YAML "
        "(default: the official values)",
    )
    parser.add_argument(
        "--max-listed",
        type=int,
        default=20,
        metavar="N",
        help="list at most N keys per kind of difference (default 20)",
    )
    parser.set_defaults(handler=run_inspect_checkpoint)


COMMANDS: list[Callable[[SubParsers], None]] = [register_inspect_checkpoint]
"""Sub-command registrars, in the order they appear in ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="python -m reenactment.engine",
        description="X-NeMo engine tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the selected command; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
