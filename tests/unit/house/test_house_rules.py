"""The house rules that import-linter cannot see: who reads the environment, and what the fast
CLI commands load. (The import contracts themselves run as `lint-imports` in `make test`.)"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

CODE_ROOTS = ("tinymlops", "flows", "tasks", "deploy")
# The package's __init__ sets TensorFlow's environment defaults before anything can import it.
ENV_WRITERS_ALLOWED = {"tinymlops/__init__.py"}
# Moving to tinymlops/settings with the fleet server's rebuild (fleet settings, webhook settings).
PENDING_FLEET_REBUILD = {
    "deploy/serve.py",  # hands the whole environment on to the Prefect server and worker it starts
}


def _python_files() -> list[Path]:
    return [p for root in CODE_ROOTS for p in sorted((REPO / root).rglob("*.py")) if "alembic" not in p.parts]


def _environment_uses(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
    return lines


def test_only_the_settings_package_touches_os_environ() -> None:
    offenders = []
    for path in _python_files():
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("tinymlops/settings/") or rel in ENV_WRITERS_ALLOWED | PENDING_FLEET_REBUILD:
            continue
        offenders += [f"{rel}:{line}" for line in _environment_uses(path)]
    assert offenders == [], "read the environment through tinymlops.settings: " + ", ".join(offenders)


def test_the_environment_rule_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself: it finds os.environ and os.getenv wherever they are written."""
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nx = os.environ.get('A')\n\ndef f():\n    return os.getenv('B')\n")
    assert _environment_uses(sample) == [2, 5]


# The fast commands: each runs in a fresh interpreter, which then reports what it imported.
_PROBE = """
import json, sys
sys.argv = ["tinymlops", *json.loads(sys.argv[1])]
from tinymlops.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
print("EXIT=" + str(code), file=sys.stderr)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "tf_keras", "keras", "mlflow", "prefect"})
print("IMPORTED=" + json.dumps(heavy), file=sys.stderr)
"""


def _imported(*args: str, cwd: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(args))], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    lines = proc.stderr.splitlines()
    assert "EXIT=0" in lines, f"tinymlops {' '.join(args)} failed: {proc.stderr[-500:]}"
    line = next(ln for ln in lines if ln.startswith("IMPORTED="))
    return json.loads(line.removeprefix("IMPORTED="))


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["keys", "--help"],
        ["bundle", "--help"],
        ["fleet", "serve", "--help"],
        ["webhook", "serve", "--help"],
        ["data", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_loads_no_tensorflow_mlflow_or_prefect(args: list[str], tmp_path: Path) -> None:
    assert _imported(*args, cwd=tmp_path) == []


def test_keys_and_bundle_verify_load_no_tensorflow(tmp_path: Path) -> None:
    from tests.support.bundle_keys import sign_releases
    from tinymlops.bundle import init_keys, load_signer

    init_keys(tmp_path / "keys")
    bundle = sign_releases(load_signer(tmp_path / "keys"), tmp_path, {"v1": 1}, ("c",), payload=8192)[("v1", "c")]
    trust = str(tmp_path / "keys" / "root.pub")
    assert _imported("keys", "show", "--keys", str(tmp_path / "keys"), cwd=tmp_path) == []
    assert _imported("bundle", "verify", str(bundle), "--trust", trust, cwd=tmp_path) == []


def test_data_validate_loads_no_tensorflow(project: Path) -> None:
    subprocess.run([sys.executable, "-c", "from tinymlops.cli import main; main()", "data", "ingest"], cwd=project)
    assert (project / "data" / "raw").is_dir()
    assert _imported("data", "validate", cwd=project) == []
