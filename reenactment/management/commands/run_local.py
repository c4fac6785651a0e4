"""Run the web server and a real Celery worker process side by side on one host.

Used by `make run`. Waits until /readyz is green, prints where to go, and stops both processes
cleanly on Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Command(BaseCommand):
    help = "Start the web server and a Celery worker, wait for /readyz, stop both on Ctrl-C."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--ready-timeout", type=float, default=180.0)
        parser.add_argument(
            "--concurrency", type=int, default=2, help="Worker processes of the local worker."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = options["host"], options["port"]
        if _port_in_use(host, port):
            raise CommandError(
                f"{host}:{port} is already in use. Is `make run` already running? "
                "Stop it, or pass --port."
            )
        log_dir = Path(settings.VAR_DIR) / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("queue", "control"):
            (Path(settings.BROKER_DIR) / sub).mkdir(parents=True, exist_ok=True)

        env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        commands = {
            "worker": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "default,gpu",
                "--concurrency",
                str(options["concurrency"]),
                "-n",
                "local@%h",
                "--loglevel",
                "INFO",
            ],
            "web": [sys.executable, manage, "runserver", f"{host}:{port}", "--noreload"],
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for name, command in commands.items():
                logs[name] = log_dir / f"{name}.log"
                handle = logs[name].open("ab")
                # Own process group: Ctrl-C reaches only us, and we stop children in order.
                processes[name] = subprocess.Popen(
                    command,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    cwd=settings.BASE_DIR,
                    start_new_session=True,
                )
            self.stdout.write(
                f"Started web (pid {processes['web'].pid}) and worker "
                f"(pid {processes['worker'].pid}); logs in {log_dir}/"
            )
            base = f"http://{host}:{port}"
            self._wait_ready(base, processes, logs, options["ready_timeout"], lambda: stopping)
            if stopping:
                return
            self.stdout.write(self.style.SUCCESS(f"Ready: {base}/readyz is green."))
            self.stdout.write(f"  Admin:    {base}/admin/   (log in with a demo user)")
            self.stdout.write(f"  API docs: {base}/api/docs/")
            self.stdout.write("Press Ctrl-C to stop.")
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        raise CommandError(
                            f"The {name} process exited with code {process.returncode}.\n"
                            f"{_tail(logs[name])}"
                        )
                time.sleep(0.5)
        finally:
            self._stop_all(processes)
        self.stdout.write("Stopped web and worker.")

    def _wait_ready(
        self,
        base: str,
        processes: dict[str, subprocess.Popen[bytes]],
        logs: dict[str, Path],
        timeout: float,
        stopping: Any,
    ) -> None:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline and not stopping():
            for name, process in processes.items():
                if process.poll() is not None:
                    raise CommandError(
                        f"The {name} process exited with code {process.returncode} during "
                        f"start-up.\n{_tail(logs[name])}"
                    )
            try:
                # base is built from --host/--port above, always http://.
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = json.loads(exc.read() or b"{}")
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1)
        if not stopping():
            raise CommandError(
                f"/readyz did not turn green within {timeout:.0f}s; last answer: {json.dumps(last)}"
            )

    @staticmethod
    def _stop_all(processes: dict[str, subprocess.Popen[bytes]]) -> None:
        # Web first so nothing new is accepted, then the worker (warm shutdown: it finishes
        # or, for acks_late tasks, returns the message to the queue).
        for name in ("web", "worker"):
            process = processes.get(name)
            if process is None or process.poll() is not None:
                continue
            # The main process only: Celery's warm shutdown stops its own pool children.
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
