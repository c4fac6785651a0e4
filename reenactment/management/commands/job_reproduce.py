"""Re-run a render job from its reproducibility manifest and report any difference."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from governance.reproducibility import (
    reproducibility_compare,
    reproducibility_manifest_build,
    runtime_current,
)
from reenactment import runtime
from reenactment.models import RenderJob
from reenactment.scratch import scratch_folder
from reenactment.services.execution import _generation_parameters
from reenactment.services.jobs import sha256_of_file, stored_file_copy


class Command(BaseCommand):
    help = (
        "Re-run JOB_ID with the same model files (hash-checked), inputs (hash-checked), "
        "parameters and seeds, then compare the manifests and the decoded frames with the "
        "job's output. Exit code 0 when reproduced, 1 when not, 2 when the job cannot be re-run."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("job_id", type=int)
        parser.add_argument(
            "--tolerance",
            type=int,
            default=0,
            help="Largest 8-bit difference per pixel still counted as reproduced (default 0).",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--keep", type=Path, default=None, help="Keep the re-run's video here.")

    @staticmethod
    def _passthrough(options: dict[str, Any]) -> list[str]:
        extra = ["--tolerance", str(options["tolerance"])]
        if options["json"]:
            extra.append("--json")
        if options["keep"] is not None:
            extra += ["--keep", str(options["keep"])]
        return extra

    def handle(self, *args: Any, job_id: int, **options: Any) -> None:
        job = RenderJob.objects.select_related("model_version").filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"Render job #{job_id} does not exist.")
        if not job.output or not job.reproducibility:
            raise CommandError(
                f"Render job #{job_id} has no output to compare with ({job.status})."
            )
        threads = job.reproducibility.get("runtime", {}).get("torch_threads")
        if threads and os.environ.get("OMP_NUM_THREADS") != str(threads):
            # CPU results depend on every thread pool's size (float sums are not associative),
            # and those are fixed when a process starts: re-run this command in a process
            # started with the job's thread count.
            command = [
                sys.executable,
                str(Path(settings.BASE_DIR) / "manage.py"),
                "job_reproduce",
                str(job_id),
                *self._passthrough(options),
            ]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            raise SystemExit(subprocess.run(command, env=env, check=False).returncode)
        with scratch_folder("reproduce", job_id=job_id) as workdir:
            inputs = {}
            for name, field, expected in (
                ("portrait", job.portrait, job.portrait_sha256),
                ("driving", job.driving, job.driving_sha256),
                ("original", job.output, job.output_sha256),
            ):
                path = stored_file_copy(field, workdir, name)
                if sha256_of_file(path) != expected:
                    raise CommandError(f"The stored {name} of job #{job_id} changed since the run.")
                inputs[name] = path
            recorded = job.reproducibility.get("parameters", {})
            parameters = {**_generation_parameters(job), "seed": recorded.get("seed")}
            pipeline = runtime.pipeline_for(job.model_version)
            rerun = workdir / "rerun.mp4"
            result = pipeline(
                inputs["portrait"], inputs["driving"], output_path=rerun, **parameters
            )
            device = runtime.device_choice().device
            manifest = reproducibility_manifest_build(
                model_version=job.model_version,
                parameters=result.parameters,
                inputs={"portrait": job.portrait_sha256, "driving": job.driving_sha256},
                device=device,
                runtime={**runtime_current(device), "torch_threads": torch.get_num_threads()},
            )
            report = reproducibility_compare(
                job.reproducibility,
                manifest,
                inputs["original"],
                rerun,
                tolerance=options["tolerance"],
            )
            if options["keep"] is not None:
                shutil.copyfile(rerun, options["keep"])
        if options["json"]:
            self.stdout.write(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str))
        else:
            self.stdout.write(f"Render job #{job_id}:")
            for line in report.describe():
                self.stdout.write(f"  {line}")
        if not report.reproduced:
            raise SystemExit(1)
