"""The README's two commands, CI, the Dockerfile and packaging stay in step with each other."""
from __future__ import annotations

import re
import tomllib

from conftest import REPO


def _readme_commands() -> list[str]:
    return re.findall(r"^    (bash tools/setup\.sh.*)$", (REPO / "README.md").read_text(), re.M)


def test_readme_has_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "--target rpi4" in commands[0] and "examples/tinycnn.onnx" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    assert _readme_commands()[1] in (REPO / ".ci" / "run").read_text()


def test_dockerfile_uses_the_setup_package_list():
    docker = (REPO / "Dockerfile").read_text()
    setup = (REPO / "tools" / "setup.sh").read_text()
    assert "tools/apt-packages.txt" in docker and "tools/apt-packages.txt" in setup
    extras = re.search(r'^EXTRAS="([^"]+)"', setup, re.M).group(1)  # the runtime set, without the dev tools
    assert f'".[{extras}]"' in docker
    assert "python:3.11" in docker and "bookworm" in docker


def test_every_target_compiler_is_in_the_package_list():
    packages = set((REPO / "tools" / "apt-packages.txt").read_text().split())
    for path in (REPO / "targets").glob("*.toml"):
        for pkg in tomllib.loads(path.read_text()).get("toolchain", {}).get("apt", []):
            assert pkg in packages, f"{path.name} needs {pkg}"


def test_packaging_lists_every_package_folder():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "edgeprune").rglob("__init__.py")}
    assert found <= listed, found - listed


def test_example_is_reproducible(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(REPO / "tools" / "make_example.py"), str(tmp_path / "m.onnx")], check=True,
                   capture_output=True)
    assert (tmp_path / "m.onnx").read_bytes() == (REPO / "examples" / "tinycnn.onnx").read_bytes()
