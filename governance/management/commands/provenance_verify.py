"""Verify the C2PA Content Credentials of a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from governance.integrations.c2pa_signing import VerificationStatus, verify_file
from governance.signing import trust_anchors_pem

EXIT_CODES = {
    VerificationStatus.TRUSTED: 0,
    VerificationStatus.VALID_UNTRUSTED: 1,
    VerificationStatus.INVALID: 2,
    VerificationStatus.NO_MANIFEST: 3,
}
LABELS = {
    VerificationStatus.TRUSTED: "Trusted",
    VerificationStatus.VALID_UNTRUSTED: "Valid but untrusted",
    VerificationStatus.INVALID: "Invalid",
    VerificationStatus.NO_MANIFEST: "No manifest",
}


class Command(BaseCommand):
    help = (
        "Report whether FILE carries valid C2PA Content Credentials: Trusted (exit 0), Valid "
        "but untrusted (1), Invalid (2) or No manifest (3), with the organisation assertion. "
        "Trust anchors come from C2PA_TRUST_ANCHORS unless --trust-anchors is given."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--trust-anchors", type=Path, default=None, help="PEM root(s).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file} is not a readable file.")
        anchors_path: Path | None = options["trust_anchors"]
        if anchors_path is not None and not anchors_path.is_file():
            raise CommandError(f"--trust-anchors {anchors_path} is not a readable file.")
        anchors = anchors_path.read_bytes() if anchors_path else trust_anchors_pem()
        result = verify_file(file, trust_anchors_pem=anchors)
        report = {
            "file": str(file),
            "status": result.status.value,
            "verdict": LABELS[result.status],
            "signer": result.signer_common_name,
            "issuer": result.signer_issuer,
            "organisation_assertion": result.org_assertion,
            "errors": [
                {"code": issue.code, "explanation": issue.explanation}
                for issue in result.validation_errors
            ],
        }
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        else:
            self.stdout.write(f"{file}: {report['verdict']}")
            if result.signer_common_name:
                self.stdout.write(
                    f"  signed by: {result.signer_common_name} (issuer {result.signer_issuer})"
                )
            for issue in result.validation_errors:
                self.stdout.write(f"  {issue.code}: {issue.explanation}")
            if result.org_assertion is not None:
                self.stdout.write("  organisation assertion:")
                self.stdout.write(json.dumps(result.org_assertion, indent=4, sort_keys=True))
        raise SystemExit(EXIT_CODES[result.status])
