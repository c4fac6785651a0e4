"""Guards for the layout fixed in ARCHITECTURE.md: platform/ and templates/ are never packages."""

import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_platform_and_templates_are_not_python_packages():
    for folder in ("platform", "templates"):
        assert (REPO_ROOT / folder).is_dir(), folder
        assert not (REPO_ROOT / folder / "__init__.py").exists(), (
            f"{folder}/__init__.py would make {folder}/ a package (see ARCHITECTURE.md §6)"
        )


def test_import_platform_from_the_repository_root_is_the_standard_library():
    code = "import platform, sys; print(platform.__file__); print(platform.system())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    module_file, system = result.stdout.splitlines()
    assert Path(module_file).parent == Path(sysconfig.get_paths()["stdlib"])
    assert system == "Linux"


def test_engine_imports_no_django():
    code = (
        "import sys, reenactment.engine; "
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('governance')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_pyproject_lists_packages_explicitly_and_guards_with_a005():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["config*", "reenactment*", "governance*"]
    assert "A005" in pyproject["tool"]["ruff"]["lint"]["extend-select"]


def test_ruff_is_clean_and_flags_a_stdlib_shadowing_package(tmp_path):
    ruff = Path(sys.executable).parent / "ruff"
    clean = subprocess.run([ruff, "check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # The same configuration, in a copy of the project, must catch the mistake the guard
    # exists for.
    (tmp_path / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text())
    (tmp_path / "platform").mkdir()
    (tmp_path / "platform" / "__init__.py").write_text("")
    shadow = subprocess.run([ruff, "check", "."], cwd=tmp_path, capture_output=True, text=True)
    assert shadow.returncode == 1
    assert "A005" in shadow.stdout
