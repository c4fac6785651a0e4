"""``python -m reenactment.engine.training``: train from a snapshot manifest, or convert one.

Train (single process, or one process per GPU under ``torchrun``)::

    python -m reenactment.engine.training --config run.json --manifest snapshot.jsonl [--resume]
    torchrun --nproc_per_node 8 -m reenactment.engine.training --config run.json \\
        --manifest snapshot.jsonl

Options given on the command line override the config file (``--stage``, ``--output-dir``,
``--max-steps``, ``--max-minutes``, ``--init-from``). ``--max-minutes`` bounds the training
loop's wall-clock time (a GPU lent for a fixed time): the run stops after the step that passes
it, checkpoints and exports, and ``--resume`` continues it later. Exit codes: 0 done, 2 refused
input (manifest malformed, withdrawn snapshot, tampered clip, bad config, an ``init_from`` folder
that cannot start the run).

Convert a SynthFace dataset's ``manifest.jsonl`` into a snapshot manifest::

    python -m reenactment.engine.training convert-synthface DATASET_DIR OUT.jsonl \\
        --snapshot-id synthface-2025-11 [--with-cross-pairs]

``--with-cross-pairs`` also lists the dataset's cross-reenactment clips (identity A performing
the motion of a clip of B), each naming that clip as its ``driving_clip_id``: the trainer's
``cross_identity_probability`` drives them with B's frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_REFUSED = 2


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reenactment.engine.training",
        description="Train X-NeMo networks from a dataset-snapshot manifest.",
    )
    parser.add_argument("--config", required=True, help="training config (JSON)")
    parser.add_argument("--manifest", required=True, help="dataset-snapshot manifest (JSONL)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--stage", type=int, choices=(0, 1, 2, 3), help="override the stage")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="override max_minutes: stop training after this many minutes, save and export",
    )
    parser.add_argument("--init-from", help="override init_from")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    return parser


def _convert_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reenactment.engine.training convert-synthface",
        description="Convert a SynthFace dataset manifest into a snapshot manifest.",
    )
    parser.add_argument("dataset_dir")
    parser.add_argument("out")
    parser.add_argument("--snapshot-id", required=True)
    parser.add_argument("--exported-at")
    parser.add_argument("--licence-id", default="synthface-cc0-1.0")
    parser.add_argument(
        "--with-cross-pairs",
        action="store_true",
        help="also list cross-reenactment clips with their driving clip (paired training)",
    )
    return parser


def run_convert(argv: Sequence[str]) -> int:
    from .manifest import convert_synthface_manifest

    args = _convert_parser().parse_args(argv)
    path = convert_synthface_manifest(
        args.dataset_dir,
        args.out,
        snapshot_id=args.snapshot_id,
        exported_at=args.exported_at,
        licence_id=args.licence_id,
        kinds=("clip", "cross") if args.with_cross_pairs else ("clip",),
    )
    print(path)
    return EXIT_OK


def run_train(argv: Sequence[str]) -> int:
    args = _train_parser().parse_args(argv)
    import torch

    from .manifest import ManifestError
    from .trainer import InitialWeightsError, TrainingConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = json.loads(open(args.config, encoding="utf-8").read())
        overrides = {
            "stage": args.stage,
            "output_dir": args.output_dir,
            "max_steps": args.max_steps,
            "max_minutes": args.max_minutes,
            "init_from": args.init_from,
        }
        data.update({k: v for k, v in overrides.items() if v is not None})
        config = TrainingConfig.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: invalid training config: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        folder = train(config, args.manifest, resume=args.resume)
    except (ManifestError, InitialWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if folder is not None:
        print(f"model written to {folder}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "convert-synthface":
        return run_convert(argv[1:])
    return run_train(argv)


if __name__ == "__main__":
    sys.exit(main())
