"""Generate a local development CA (root, intermediate, ES256 leaf) for C2PA signing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from governance.integrations.c2pa_signing import (
    SignerConfig,
    SignerConfigurationError,
    load_signer_material,
)
from governance.integrations.dev_ca import CHAIN_FILENAME, DevCAError, generate_dev_ca


class Command(BaseCommand):
    help = (
        "Generate a development C2PA signer: root CA, intermediate CA and an ES256 leaf with "
        "the properties c2pa requires (CA=false, digitalSignature, emailProtection EKU). Writes "
        "chain.pem (leaf first), signer.key.pem (PKCS#8, mode 0600) and root.pem (trust "
        "anchor). Never for production. Existing material is kept unless --force."
    )
    # The signer check would refuse to run before the material this command creates exists.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--out", type=Path, default=None, help="Folder to write to (default: var/c2pa)."
        )
        parser.add_argument("--force", action="store_true", help="Replace existing material.")
        parser.add_argument(
            "--common-name", default=None, help="Subject common name of the signing leaf."
        )

    def handle(self, *args: Any, out: Path | None, force: bool, **options: Any) -> None:
        out_dir = (out or Path(settings.VAR_DIR) / "c2pa").resolve()
        if (out_dir / CHAIN_FILENAME).exists() and not force:
            self.stdout.write(f"Development signer already present in {out_dir} (kept).")
            paths = None
        else:
            extra = {"common_name": options["common_name"]} if options["common_name"] else {}
            try:
                paths = generate_dev_ca(out_dir, force=force, **extra)
            except DevCAError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(self.style.SUCCESS(f"Development signer written to {out_dir}"))
        chain, key, root = (
            out_dir / CHAIN_FILENAME,
            out_dir / "signer.key.pem",
            out_dir / "root.pem",
        )
        if paths is not None:
            chain, key, root = paths.chain, paths.key, paths.root
        try:
            load_signer_material(
                SignerConfig(cert_chain_path=chain, private_key_path=key, trust_anchors_path=root)
            )
        except SignerConfigurationError as exc:
            raise CommandError(f"The material in {out_dir} is not usable: {exc}") from exc
        self.stdout.write("Use it with:")
        self.stdout.write(f"  C2PA_SIGNER_CHAIN={chain}")
        self.stdout.write(f"  C2PA_SIGNER_KEY={key}")
        self.stdout.write(f"  C2PA_TRUST_ANCHORS={root}")
