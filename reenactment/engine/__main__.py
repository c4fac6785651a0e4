"""Command line of the X-NeMo engine: ``python -m reenactment.engine COMMAND ...``.

Commands are registered in :data:`COMMANDS`; each entry adds one sub-parser and sets a
``handler(args) -> exit code``. Heavy libraries (torch, diffusers) are imported inside the
handlers so that ``--help`` stays instant. To add a command (e.g. ``animate`` or ``train``),
write a ``register_<name>(subparsers)`` function and append it to :data:`COMMANDS`.

``inspect-checkpoint`` exit codes: 0 every file is compatible, 1 at least one is not (or is not
recognised), 2 an input could not be read (missing, corrupt, unsafe pickle, bad config file).

``animate`` exit codes: 0 the video was written, 2 bad input (unreadable, corrupt or unsupported
portrait/driving video/model folder, no face or several faces in the portrait, the driving face
lost for too long, invalid options), 1 any other failure (including cancellation). Errors are one
line on stderr, without a traceback (``--debug`` shows it); no output file is left behind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .configs import COLOR_MATCH_MODES, INITIAL_LATENTS_MODES, strength_timesteps

EXIT_OK = 0
EXIT_INCOMPATIBLE = 1
EXIT_UNREADABLE = 2
EXIT_FAILURE = EXIT_INCOMPATIBLE  # animate: anything that is not the input's fault
EXIT_BAD_INPUT = EXIT_UNREADABLE  # animate: unusable input or options

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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


#: What ``animate`` uses when neither the command line nor the model folder says (the release).
RELEASE_SETTINGS = {
    "num_inference_steps": 35,
    "guidance_scale": 2.5,
    "resolution": 512,
    "strength": 1.0,
    "initial_latents": "blurred_reference",
    "color_match": "none",
    # The release has no detail refiner; on a model without one this changes nothing.
    "refine_details": True,
}


def _generation_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Command line, else the model folder's ``_generation_defaults``, else the release's."""
    from .configs import check_generation_defaults
    from .loading import read_generation_defaults, read_vae_scale_factor

    given = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "resolution": args.resolution,
        "strength": args.strength,
        "initial_latents": args.initial_latents,
        "color_match": args.color_match,
        "refine_details": args.refine_details,
    }
    recommended = check_generation_defaults(
        read_generation_defaults(args.model), tile=read_vae_scale_factor(args.model)
    )
    return {
        key: value
        if value is not None
        else type(RELEASE_SETTINGS[key])(recommended.get(key, RELEASE_SETTINGS[key]))
        for key, value in given.items()
    }


def _pick_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; raises ``ValueError`` for a device
    that does not exist here (a bad option, not a crash)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: not a device name ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: unsupported device type {device.type!r}")
    return name


class _ProgressBar:
    """tqdm over denoising steps (all segments), fed by ``callback_on_step_end``."""

    def __init__(self, enabled: bool, total_steps: int | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total_steps, unit="step", desc="animating", disable=not enabled, leave=False
        )

    def __call__(
        self, pipe: Any, step_index: int, timestep: Any, info: dict[str, Any]
    ) -> dict[str, Any]:
        segments = info.get("num_segments")
        frames_total = info.get("total_frames")
        self.bar.set_postfix_str(
            f"segment {info['segment_index'] + 1}/{segments or '?'}, "
            f"{info['num_windows']} windows, "
            f"frames {info['frames_done']}+{info['segment_frames']}/{frames_total or '?'}",
            refresh=False,
        )
        self.bar.update(1)
        return {}

    def close(self) -> None:
        self.bar.close()


def run_animate(args: argparse.Namespace) -> int:
    """Handler of ``animate``."""
    try:
        return _animate(args)
    except KeyboardInterrupt:
        print("cancelled: no output written", file=sys.stderr)
        return EXIT_FAILURE


def _animate(args: argparse.Namespace) -> int:
    # Media checks only need PyAV and Pillow: bad files are refused before torch is imported.
    from .video_io import MediaInputError, load_image, probe_video

    out = Path(args.out)
    portrait_path = Path(args.portrait)
    driving_path = Path(args.driving)

    def bad_input(message: str) -> int:
        lines = message.strip().splitlines() or ["invalid input"]
        more = " (details: --debug)" if len(lines) > 1 else ""
        print(f"error: {lines[0]}{more}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if out.suffix.lower() != ".mp4":
        return bad_input(f"{out.name}: the output must be an .mp4 file")
    if not out.parent.is_dir():
        return bad_input(f"output folder does not exist: {out.parent}")
    try:
        settings = _generation_settings(args)
    except (TypeError, ValueError) as exc:
        return bad_input(f"{args.model}: unusable _generation_defaults in model_index.json ({exc})")
    from .loading import read_vae_scale_factor

    # The model's autoencoder tile (4 px for the preview model); the release's SVD VAE: 8.
    tile = read_vae_scale_factor(args.model) or 8
    if settings["resolution"] < tile or settings["resolution"] % tile:
        return bad_input(
            f"--resolution must be a multiple of {tile} (this model's autoencoder tile), "
            f"got {settings['resolution']}"
        )
    try:
        portrait, report = load_image(portrait_path, max_side=args.max_portrait_side)
        if report.downscaled:
            print(f"note: {portrait_path.name}: {report.message}", file=sys.stderr)
        info = probe_video(driving_path)
    except MediaInputError as exc:
        if args.debug:
            raise
        return bad_input(str(exc))

    from .faces import FaceError, FaceModelError, get_face_backend
    from .loading import CheckpointError
    from .pipeline_reenactment import (
        GenerationCancelled,
        PipelineInputError,
        ReenactmentPipeline,
        plan_segments,
    )
    from .preprocessing import PreprocessingError, preprocess_reference

    try:
        device = _pick_device(args.device)
    except ValueError as exc:
        return bad_input(str(exc))
    try:
        backend = get_face_backend("dlib")
        try:
            reference = preprocess_reference(
                portrait, backend, generation_size=settings["resolution"]
            )
        except FaceError as exc:
            if isinstance(exc, FaceModelError):
                raise
            return bad_input(f"{portrait_path.name}: {exc}")
        pipe = ReenactmentPipeline.from_model_folder(
            args.model, device=device, dtype=None if args.dtype == "auto" else args.dtype
        )
        pipe.set_progress_bar_config(disable=True)
        segments = len(plan_segments(info.frame_count, args.segment_frames, 24))
        steps_run = len(
            strength_timesteps(range(settings["num_inference_steps"]), settings["strength"])
        )
        progress = _ProgressBar(not args.quiet, segments * steps_run)
        try:
            result = pipe(
                reference,
                driving_path,
                output_path=out,
                **settings,
                seed=args.seed,
                segment_frames=args.segment_frames,
                paste_back=not args.no_paste_back,
                face_backend=backend,
                detect_every=args.detect_every,
                max_gap_seconds=args.max_gap_seconds,
                audio=not args.no_audio,
                crf=args.crf,
                callback_on_step_end=progress,
            )
        finally:
            progress.close()
    except (MediaInputError, PreprocessingError, CheckpointError, PipelineInputError) as exc:
        if args.debug:
            raise
        return bad_input(str(exc))
    except GenerationCancelled:
        print("cancelled: no output written", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line, no traceback
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: {type(exc).__name__}: {first}", file=sys.stderr)
        return EXIT_FAILURE
    width, height = result.size
    print(
        f"wrote {result.path}: {result.num_frames} frames, {width}x{height}, "
        f"{float(result.fps):g} fps, audio {'yes' if result.has_audio else 'no'}, "
        f"seed {result.seed}, {result.timings['total_s']:.1f} s"
    )
    print(
        f"settings: {settings['resolution']} px, {settings['num_inference_steps']} steps, "
        f"guidance {settings['guidance_scale']:g}, strength {settings['strength']:g}, "
        f"start {settings['initial_latents']}, colour match {settings['color_match']}, "
        f"details refined {'yes' if result.parameters['refine_details'] else 'no'}"
    )
    return EXIT_OK


def register_animate(subparsers: SubParsers) -> None:
    """Add the ``animate`` command."""
    parser = subparsers.add_parser(
        "animate",
        help="animate a portrait with the face motion of a driving video",
        description=(
            "Generate an H.264 MP4 in which the portrait's face follows the driving video's "
            "facial motion (X-NeMo). Output frame rate and audio follow the driving video; the "
            "face is pasted back into the full portrait unless --no-paste-back. The file is "
            "written to a temporary name and renamed when complete. Exit code 0 on success, "
            "2 on bad input, 1 on other failures."
        ),
    )
    parser.add_argument("--portrait", required=True, metavar="IMG", help="portrait image")
    parser.add_argument("--driving", required=True, metavar="VIDEO", help="driving video")
    parser.add_argument("--out", required=True, metavar="OUT.mp4", help="output video")
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="model folder (ours or the release's)"
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="denoising steps (the model's recommendation, else 35)",
    )
    parser.add_argument(
        "--guidance",
        type=_non_negative_float,
        default=None,
        metavar="G",
        help="classifier-free guidance scale (the model's recommendation, else 2.5)",
    )
    parser.add_argument(
        "--strength",
        type=_unit_interval,
        default=None,
        metavar="S",
        help="share of the schedule run, in (0, 1] (the model's recommendation, else 1.0)",
    )
    parser.add_argument(
        "--initial-latents",
        choices=INITIAL_LATENTS_MODES,
        default=None,
        help="start of the denoising (the model's recommendation, else blurred_reference)",
    )
    parser.add_argument(
        "--color-match",
        choices=COLOR_MATCH_MODES,
        default=None,
        help="give the generated face the portrait's colours: reference, or none (the model's "
        "recommendation, else none)",
    )
    parser.add_argument(
        "--refine-details",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the model's detail refiner, which corrects every frame with the portrait (the "
        "preview model's: mostly colours and large shapes); models that have one; the model's "
        "recommendation, else on",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="S", help="seed (default: random, printed)"
    )
    parser.add_argument(
        "--no-paste-back",
        action="store_true",
        help="write the bare generated face crop instead of the full portrait",
    )
    parser.add_argument(
        "--device", default="auto", metavar="D", help="cpu, cuda, cuda:1, ... (default: auto)"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="network precision (auto: float32 on CPU, float16 on GPU)",
    )
    parser.add_argument(
        "--resolution",
        type=_positive_int,
        default=None,
        metavar="PX",
        help="generation size of the face crop (the model's recommendation, else 512)",
    )
    parser.add_argument(
        "--segment-frames",
        type=_positive_int,
        default=500,
        metavar="N",
        help="longest run of frames denoised together (500; longer videos go in segments)",
    )
    parser.add_argument(
        "--detect-every",
        type=_positive_int,
        default=1,
        metavar="N",
        help="detect the driving face every N frames, interpolating in between (1)",
    )
    parser.add_argument(
        "--max-gap-seconds",
        type=_non_negative_float,
        default=1.0,
        metavar="S",
        help="fail when the driving face is missing for longer than this (1.0)",
    )
    parser.add_argument(
        "--max-portrait-side",
        type=_positive_int,
        default=2048,
        metavar="PX",
        help="downscale larger portraits to this longer side, and say so (2048)",
    )
    parser.add_argument(
        "--crf", type=int, default=18, choices=range(52), metavar="0-51", help="H.264 quality (18)"
    )
    parser.add_argument("--no-audio", action="store_true", help="do not carry the driving audio")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_animate)


COMMANDS: list[Callable[[SubParsers], None]] = [register_inspect_checkpoint, register_animate]
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
