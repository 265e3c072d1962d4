"""One environment: every library the services and models need imports together."""

from __future__ import annotations

import subprocess
import sys

import pytest

from movierec import cli


def test_all_heavy_libraries_import_in_one_process() -> None:
    code = ("from movierec.compat.dgl import import_dgl; dgl = import_dgl(); "
            "import torch, paddle, grpc, grpc_tools, pymilvus, psycopg, redis; "
            "print(torch.__version__, dgl.__version__, paddle.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    torch_v, dgl_v, paddle_v = out.stdout.split()[-3:]
    assert torch_v.startswith("2.13.0") and dgl_v == "1.1.3" and paddle_v == "3.3.1"


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for name in ("data", "train", "evaluate", "load", "serve", "up", "recommend", "loadtest"):
        assert name in text


def test_data_stats_json_counts(ml100k_dir, capsys: pytest.CaptureFixture) -> None:
    import json

    assert cli.main(["data", "stats", "--dataset", "ml-100k", "--data-dir", str(ml100k_dir),
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ratings"], report["users"], report["movies"]) == (100_000, 943, 1682)
    assert report["splits"]["leave_last_out"] == {"train": 98_114, "valid": 943, "test": 943}


def test_generated_code_matches_protos(tmp_path) -> None:
    from pathlib import Path

    from movierec import protogen

    protogen.generate(tmp_path)
    root = Path(protogen.__file__).resolve().parent.parent
    for fresh in tmp_path.rglob("*_pb2*.py"):
        current = root / fresh.relative_to(tmp_path)
        assert current.read_text() == fresh.read_text(), f"{current} is stale: run make protos"


def test_pyproject_pins_agree_with_the_lock() -> None:
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$",
                           (root / "constraints.txt").read_text(), re.M))
    lock = {k.lower().replace("_", "-"): v for k, v in lock.items()}
    pins = [*project["dependencies"],
            *(d for group in project["optional-dependencies"].values() for d in group)]
    for pin in pins:
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)$", pin)
        if match and not match.group(1).startswith("movierec"):
            name = match.group(1).lower().replace("_", "-")
            assert lock.get(name) == match.group(3), f"{pin} disagrees with constraints.txt"
    for name in ("grpcio", "grpcio-tools", "protobuf", "torch"):
        assert name in lock, f"{name} is not locked"


def test_readme_documents_every_setting_and_no_other() -> None:
    import importlib
    import re
    from pathlib import Path

    from movierec import registry, settings
    from movierec.server.echo import EchoSettings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    classes = [settings.ServerSettings, EchoSettings] + [
        getattr(importlib.import_module(s.module), s.settings_class) for s in registry.SERVICES]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, re.M))
    read = {name for cls in classes for name in settings.variables(cls)}
    # Read outside the services' settings: data location, downloads and the local runtime.
    elsewhere = {"MOVIELENS_DIR", "MOVIEREC_HOME", "MILVUS_MODE", "MILVUS_PORT"}
    assert read - documented == set(), "missing from the README table"
    assert documented - read - elsewhere == set(), "documented but read by nothing"
