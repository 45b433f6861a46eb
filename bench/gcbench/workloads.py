"""The workloads a build comparison times (std, minio-go, the fixture):
their sources copied to a temp dir, their package lists, and the file the
one-file-change cases edit."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from .plan import MINIO_GO_MODULE
from .util import REPO_ROOT, BenchError, log, run_checked

class Workload:
    def __init__(self, name: str, argv: list[str], cwd: Path, module_dir: Path | None, info: dict[str, object]):
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.module_dir = module_dir
        self.info = info
        self.main_packages = 0
        self.edit_file: Path | None = None
        self.edit_original: bytes | None = None

    def apply_edit(self, n: int) -> None:
        assert self.edit_file is not None and self.edit_original is not None
        text = (f"\n// Added by bench/compare.py for the one-file-change scenario (edit {n}).\n"
                f"func BenchmarkEdit{n}() int {{ return {n} }}\n")
        self.edit_file.write_bytes(self.edit_original + text.encode())

    def revert_edit(self) -> None:
        if self.edit_file is not None and self.edit_original is not None:
            self.edit_file.write_bytes(self.edit_original)


def go_list_packages(cwd: Path, env: dict[str, str], pattern: str) -> list[dict[str, object]]:
    fmt = "{{.ImportPath}}\t{{.Name}}\t{{join .Imports \",\"}}\t{{join .GoFiles \",\"}}\t{{.Dir}}"
    out = run_checked(["go", "list", "-f", fmt, pattern], f"go list {pattern} in {cwd}", cwd=cwd, env=env)
    pkgs = []
    for line in out.splitlines():
        path, name, imports, gofiles, pdir = line.split("\t")
        pkgs.append({"path": path, "name": name, "imports": [i for i in imports.split(",") if i],
                     "gofiles": [g for g in gofiles.split(",") if g], "dir": pdir})
    return pkgs


def choose_edit_target(pkgs: list[dict[str, object]]) -> tuple[dict[str, object], str, int]:
    """The package that most other packages of the module import (ties: the
    one with the fewest imports of its own, then by path), and its first
    plain Go file. Returns (package, file name, importer count)."""
    in_module = {p["path"] for p in pkgs}
    importers = {p["path"]: 0 for p in pkgs}
    for p in pkgs:
        for imp in p["imports"]:
            if imp in importers and imp != p["path"]:
                importers[imp] += 1
    candidates = [p for p in pkgs if p["name"] != "main" and p["gofiles"] and importers[p["path"]] > 0]
    if not candidates:
        raise BenchError("one-file-change: no package in the module is imported by another one")
    candidates.sort(key=lambda p: (-importers[p["path"]], len([i for i in p["imports"] if i in in_module]),
                                   len(p["imports"]), p["path"]))
    pkg = candidates[0]
    files = sorted(f for f in pkg["gofiles"] if not f.endswith("_test.go"))
    return pkg, files[0], importers[pkg["path"]]


def prepare_workload(name: str, src_root: Path, env: dict[str, str], args: argparse.Namespace) -> Workload:
    if name == "std":
        cwd = src_root / "std"
        cwd.mkdir(parents=True)
        wl = Workload(name, ["go", "build", "std"], cwd, None, {"command": "go build std"})
        pkgs = go_list_packages(cwd, env, "std")
    else:
        if name == "minio-go":
            spec = f"{MINIO_GO_MODULE}@{args.minio_go_version}"
            log(f"# {name}: go mod download -json {spec}")
            meta = json.loads(run_checked(["go", "mod", "download", "-json", spec],
                                          f"fetching {spec} through the module proxy", env=env))
            if meta.get("Error"):
                raise BenchError(f"go mod download {spec}: {meta['Error']}")
            source = Path(meta["Dir"])
            info = {"module": MINIO_GO_MODULE, "version": meta.get("Version"), "sum": meta.get("Sum"),
                    "command": "go build ./...",
                    "note": "build only: its tests need network access (a live S3 endpoint)"}
        else:
            source = REPO_ROOT / "integration" / "fixture"
            info = {"module": "example.com/fixture (integration/fixture)", "command": "go build ./..."}
        mod_dir = src_root / name
        shutil.copytree(source, mod_dir, symlinks=True)
        for dirpath, dirnames, filenames in os.walk(mod_dir):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode | 0o200)
        os.chmod(mod_dir, 0o755)
        # Untimed: every dependency into the shared module cache.
        run_checked(["go", "mod", "download"], f"go mod download in {mod_dir}", cwd=mod_dir, env=env)
        wl = Workload(name, ["go", "build", "./..."], mod_dir, mod_dir, info)
        pkgs = go_list_packages(mod_dir, env, "./...")
        pkg, fname, n_importers = choose_edit_target(pkgs)
        wl.edit_file = Path(pkg["dir"]) / fname
        wl.edit_original = wl.edit_file.read_bytes()
        wl.info["edit"] = {"file": str(wl.edit_file.relative_to(mod_dir)), "package": pkg["path"],
                           "importers_in_module": n_importers,
                           "change": "appends `func BenchmarkEdit<N>() int { return N }` (N unique per build)"}
    wl.main_packages = sum(1 for p in pkgs if p["name"] == "main")
    wl.info["packages"] = len(pkgs)
    wl.info["main_packages"] = wl.main_packages
    return wl
