"""Deployment files checked offline: environment.yml against pyproject, the Dockerfile, the commands
the manifests run, the dask-kubernetes resources against the operator's CRDs, the kustomize overlays
rendered and validated, and `tweetoscope cluster` without a Kubernetes cluster."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from tweetoscope.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "dask-k8s"
TOOLS = ROOT / ".venv-tools" / "bin"
KUSTOMIZE = ROOT / ".venv" / "bin" / "kustomize"
#: conda-forge names that differ from PyPI's
CONDA_NAMES = {"confluent-kafka": "python-confluent-kafka", "prometheus-client": "prometheus_client"}


def requirement(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(.*)", text)
    return m.group(1).lower(), m.group(2).replace(" ", "")


# ------------------------------------------------------------------ environments


def test_environment_yml_in_step_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = dict(requirement(r) for r in project["dependencies"] + extras["k8s"] + extras["notebooks"])
    wanted = {CONDA_NAMES.get(n, n): v for n, v in wanted.items()}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    have = dict(requirement(d) for d in env["dependencies"] if isinstance(d, str) and d not in ("pip",))
    python = have.pop("python")
    assert python == project["requires-python"]
    assert have == wanted, {"missing or different in environment.yml": {k: v for k, v in wanted.items()
                                                                         if have.get(k) != v},
                            "only in environment.yml": sorted(set(have) - set(wanted))}


def test_constraints_pin_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(line.lower().split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    pins = {re.sub(r"[-_.]+", "-", k): v for k, v in pins.items()}
    for req in project["dependencies"] + project["optional-dependencies"]["k8s"]:
        name = re.sub(r"[-_.]+", "-", requirement(req)[0])
        assert name in pins, f"{name} is not pinned in constraints.txt"


# ------------------------------------------------------------------ image


def dockerfile_lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, without comments and blank lines."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def dockerfile_stages() -> list[list[str]]:
    """The instructions of each stage, from its FROM (the global ARGs before the first FROM are left out)."""
    stages: list[list[str]] = []
    for line in dockerfile_lines():
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_slim_non_root_without_compilers():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert re.match(r"FROM python:[\d.]+-slim", final[0])
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and not users[-1].startswith(("root", "0")), users
    assert not any(re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", line) for line in final)
    build = " ".join(stages[0])
    assert "--constraint constraints.txt" in build
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def dockerfile_global_args() -> dict[str, str]:
    args = {}
    for line in dockerfile_lines():
        if line.upper().startswith("FROM "):
            break
        m = re.fullmatch(r"ARG\s+(\w+)(?:=(\S*))?", line, re.IGNORECASE)
        if m:
            args[m.group(1)] = m.group(2) or ""
    return args


def stage_name(stage: list[str]) -> str | None:
    m = re.search(r"\sAS\s+(\S+)$", stage[0], re.IGNORECASE)
    return m.group(1) if m else None


def stage_commands(lines: list[str]) -> list[str]:
    """The shell commands of the RUN instructions among ``lines``, split at ``&&``."""
    return [c.strip() for line in lines if line.upper().startswith("RUN ") for c in line[4:].split("&&")]


def copy_from(line: str) -> str | None:
    m = re.match(r"COPY\s.*--from=(\S+)", line, re.IGNORECASE)
    return m.group(1) if m else None


def copied_paths(line: str) -> list[str]:
    """The sources of a COPY from the build context (not --from), options left out."""
    if not line.upper().startswith("COPY ") or copy_from(line):
        return []
    return [a for a in shlex.split(line)[1:-1] if not a.startswith("--")]


def is_pip_install(command: str) -> bool:
    return re.search(r"\bpip(3)?\b.*\binstall\b", command) is not None


def installs_k8s_extra(command: str) -> bool:
    return is_pip_install(command) and re.search(r"\[k8s\]|requirements-k8s|dask-kubernetes", command) is not None


def stage_closure(name: str) -> list[str]:
    """The stages whose files the image of stage ``name`` holds: its FROM chain and what it copies --from."""
    by_name = {stage_name(s): s for s in dockerfile_stages()}
    seen: list[str] = []

    def visit(n: str) -> None:
        if n in seen or n not in by_name:
            return
        seen.append(n)
        visit(by_name[n][0].split()[1])
        for line in by_name[n]:
            if copy_from(line):
                visit(copy_from(line))

    visit(name)
    return seen


SOURCES = ("tweetoscope", "streams", "estimators")


def test_dockerfile_installs_the_pinned_dependencies_before_the_sources():
    """Dependencies (from constraints.txt) in layers of their own, before any COPY of the sources; the
    project after them with --no-deps; the final images copy the project last."""
    stages = dockerfile_stages()
    by_name = {stage_name(s): s for s in stages}
    sources_in: dict[str, bool] = {}  # stage -> the sources are copied in it or in its FROM chain
    context_in: dict[str, set[str]] = {}  # stage -> what it and its FROM chain copy from the build context
    deps_installs = project_installs = 0
    for stage in stages:
        parent = stage[0].split()[1]
        copied = sources_in.get(parent, False)
        context = set(context_in.get(parent, set()))
        for line in stage:
            paths = [p.rstrip("/") for p in copied_paths(line)]
            context |= set(paths)
            if any(p in SOURCES or p in (".", "") for p in paths):
                copied = True
            for command in stage_commands([line]):
                if not is_pip_install(command):
                    continue
                if "--constraint constraints.txt" in command:
                    assert not copied, f"dependencies installed after the sources are copied: {command}"
                    assert context <= {"pyproject.toml", "constraints.txt", "build-constraints.txt"}, \
                        f"copied before the dependencies' layer: {sorted(context)}"
                    assert "--no-deps" not in command
                    deps_installs += 1
                elif "--no-deps" in command:
                    assert copied, f"the project is installed before its sources are copied: {command}"
                    project_installs += 1
                else:  # the build tools, pinned by PIP_CONSTRAINT
                    assert set(command.split()[command.split().index("install") + 1:]) <= \
                        {"--upgrade", "-U", "pip", "setuptools", "wheel"}, command
        sources_in[stage_name(stage) or ""] = copied
        context_in[stage_name(stage) or ""] = context
    assert deps_installs >= 1 and project_installs >= 1
    # The final images: the project's files (from a stage that copied the sources) are their last layer.
    for name in (stage_name(stages[-1]), "k8s"):
        layers = [line for line in by_name[name] if line.upper().startswith(("COPY ", "RUN ", "ADD "))]
        with_sources = [i for i, line in enumerate(layers) if sources_in.get(copy_from(line) or "", False)]
        assert with_sources == [len(layers) - 1], (name, layers)


def test_dockerfile_pins_the_base_image_and_the_build_tools():
    args = dockerfile_global_args()
    stages = dockerfile_stages()
    names = {stage_name(s) for s in stages}
    for stage in stages:
        image = stage[0].split()[1]
        if image in names:
            continue
        m = re.fullmatch(r"python:[\d.]+-slim-\w+@(sha256:[0-9a-f]{64}|\$\{(\w+)\})", image)
        assert m, f"base image not pinned by digest: {stage[0]}"
        if m.group(2):
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", args.get(m.group(2), "")), (m.group(2), args)
    pins = {}
    for line in (ROOT / "build-constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    assert {"pip", "setuptools", "wheel"} <= set(pins), pins
    runtime = dict(requirement(line) for line in (ROOT / "constraints.txt").read_text().splitlines()
                   if "==" in line and not line.startswith("#"))
    for name, version in pins.items():  # both files constrain the same installs: they must agree
        assert runtime.get(name, f"=={version}") == f"=={version}", (name, version, runtime.get(name))
    env: dict[str, str] = {}
    for stage in stages:
        parent = stage[0].split()[1]
        constraint = env.get(parent)
        for line in stage:
            m = re.match(r"ENV\s.*\bPIP_CONSTRAINT=(\S+)", line)
            if m:
                constraint = m.group(1)
            if any(is_pip_install(c) for c in stage_commands([line])):
                assert constraint and constraint.endswith("build-constraints.txt"), (stage[0], line)
        env[stage_name(stage) or ""] = constraint


def test_dockerfile_leaves_data_and_manifests_root_owned_and_runs_as_non_root():
    stages = dockerfile_stages()
    for line in dockerfile_lines():
        if line.upper().startswith("COPY ") and re.search(r"\b(data|dask-k8s)/", line):
            assert "--chown" not in line, line
    for name in (stage_name(stages[-1]), "k8s"):
        (stage,) = [s for s in stages if stage_name(s) == name]
        users = [line.split()[1] for line in stage if line.upper().startswith("USER ")]
        assert users and not users[-1].startswith(("root", "0")), (name, users)
        assert any(re.search(r"COPY\s+data/", line) for line in stage), name


def test_dockerfile_default_target_has_no_kubernetes_clients():
    """The default target (the last stage) lacks the [k8s] extra; the k8s target adds it, pinned."""
    stages = dockerfile_stages()
    by_name = {stage_name(s): s for s in stages}
    default = stage_name(stages[-1])
    assert default != "k8s" and "k8s" in by_name
    commands = [c for n in stage_closure(default) for c in stage_commands(by_name[n])]
    assert not any(installs_k8s_extra(c) for c in commands), stage_closure(default)
    k8s = [c for n in stage_closure("k8s") for c in stage_commands(by_name[n]) if installs_k8s_extra(c)]
    assert k8s and all("--constraint constraints.txt" in c for c in k8s), k8s


SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"


def loaded_segments(path: Path) -> list:
    """What the loader maps of an ELF64 file: its program headers and the bytes of each segment, the ELF
    header's section-table fields (e_shoff, e_shnum, e_shstrndx, which strip changes) zeroed."""
    import struct

    f = bytearray(path.read_bytes())
    assert f[:6] == b"\x7fELF\x02\x01", path
    f[40:48], f[60:64] = bytes(8), bytes(4)
    off, n = struct.unpack_from("<Q", f, 32)[0], struct.unpack_from("<H", f, 56)[0]
    headers = [struct.unpack_from("<IIQQQQQQ", f, off + 56 * i) for i in range(n)]
    return [(h, bytes(f[h[2]:h[2] + h[5]])) for h in headers]


def test_dockerfile_slims_the_venv_safely(tmp_path):
    """The Dockerfile's cut of the venv, run on a fake site-packages holding real shared objects of the test
    venv (strip wrapped by a recorder): strip never touches the auditwheel-repaired files (*.libs/, extension
    modules with an RPATH/RUNPATH: strip corrupts what patchelf rewrote, numpy's and numba's thread pools
    broke), a file patchelf rewrote without an RPATH (numba's omppool) is left as it was, the others lose
    their symbol tables but not a byte of what the loader maps nor a dynamic symbol, and still import;
    identical *.libs/ files become one (hard links); the `test` suites and the optional parts that cannot be
    imported for want of a requirement go, one failing otherwise stays; no .py source nor .pyc of a kept
    package is deleted, bokeh keeps the minified bundles its server sends, numba keeps its C files, the
    licences stay; the cut is made in the stage the default target copies /opt/venv from, so binutils stays
    out of the final images."""
    stages = dockerfile_stages()
    by_name = {stage_name(s): s for s in stages}
    (cut_stage, cut), = [(stage_name(s), line[4:]) for s in stages for line in s
                         if line.upper().startswith("RUN ") and line[4:].strip().startswith(f"cd {SITE_PACKAGES}")]
    default = stages[-1]
    assert any(copy_from(line) == cut_stage and "/opt/venv" in line for line in default), (cut_stage, default)
    for name in (stage_name(default), "k8s"):
        assert not any(re.search(r"\b(apt-get|apt|strip|readelf|binutils)\b", c)
                       for c in stage_commands(by_name[name])), name
    for line in dockerfile_lines():  # strip runs in the cut only, and writes into a copy (checked, below)
        if line.upper().startswith("RUN ") and re.search(r"(^|[\s;])strip\s", line):
            assert line[4:] == cut and all("-o" in shlex.split(c) for c in re.findall(r"\bstrip\s[^;&|]*", cut)), line
    for command in stage_commands(dockerfile_lines()):
        assert not re.search(r"--no-compile|PYTHONDONTWRITEBYTECODE", command), command
    assert not any(re.search(r"\bPYTHONDONTWRITEBYTECODE\b", line) for line in dockerfile_lines())

    tools = {t: shutil.which(t) for t in ("strip", "readelf", "sha256sum")}
    if not all(tools.values()):
        pytest.skip(f"binutils/coreutils missing: {[t for t, w in tools.items() if not w]}")
    import importlib.util

    real = Path(importlib.util.find_spec("numpy").origin).parents[1]  # the test venv's site-packages
    one = lambda pattern: next(real.glob(pattern)).relative_to(real).as_posix()  # noqa: E731
    plain = [one("yaml/_yaml.*.so"), one("msgpack/_cmsgpack.*.so")]   # no RPATH, not patched
    patched = one("numba/np/ufunc/omppool.*.so")                      # patchelf-edited, no RPATH
    rpath = one("numpy/linalg/_umath_linalg.*.so")                    # RUNPATH $ORIGIN/../../numpy.libs
    quadmath = one("numpy.libs/libquadmath-*.so*")
    twin, other = "scipy.libs/" + quadmath.split("/")[1], one("scipy.libs/libgfortran-*.so*")
    libs = [quadmath, twin, other]  # twin: the same file as quadmath, in another *.libs/
    site = tmp_path / "site-packages"
    copies = {n: real / n for n in plain + [patched, rpath, quadmath, other]}
    copies.update({"llvmlite/binding/libllvmlite.so": real / plain[0], twin: real / quadmath})
    elf = {}
    for name, source in copies.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, site / name)  # a copy: the test venv's files (maybe hard links) stay untouched
        elf[name] = (site / name).read_bytes()
    assert readelf(site / rpath, "-d").count("RUNPATH") + readelf(site / rpath, "-d").count("RPATH") >= 1
    assert not re.search(r"R(UN)?PATH", readelf(site / patched, "-d"))

    keep = ["numpy/__init__.py", "numpy/__pycache__/__init__.cpython-311.pyc", "numpy.libs/libscipy_openblas.so",
            "bokeh/server/static/js/bokeh.min.js", "bokeh/server/static/js/bokeh-mathjax.min.js",
            "bokeh/server/static/js/bokeh-widgets.min.js", "bokeh/server/views/app_index.html",
            "numba/_helperlib.c", "numba/_numba_common.h", "scipy/special/__init__.py", "sklearn/tree/_tree.py",
            "numpy-2.0.dist-info/licenses/numpy/_core/include/numpy/LICENSE.h", "numpy-2.0.dist-info/RECORD",
            "tornado/testing.py", "numpy/testing/__init__.py", "joblib/testing.py", "dask/array/__init__.py",
            "confluent_kafka/avro/__init__.py", "confluent_kafka/serialization/__init__.py"]
    gone = ["bokeh/server/static/js/bokeh.js", "bokeh/server/static/js/bokeh-mathjax.js",
            "bokeh/server/static/js/compiler.js", "bokeh/server/static/js/lib/bokeh.d.ts",
            "bokeh/server/static/lib/lib.dom.d.ts", "numpy/_core/include/numpy/ndarrayobject.h",
            "scipy/special/cython_special.pyx", "scipy/special/cython_special.pxd", "numpy/__init__.pyi",
            "sklearn/tree/_tree.cpp", "bokeh/server/static/js/bokeh.min.js.map",
            "tornado/test/runtests.py", "tornado/test/__pycache__/runtests.cpython-311.pyc",
            "joblib/test/test_parallel.py", "dask/dataframe/__init__.py", "dask/dataframe/core.py",
            "confluent_kafka/schema_registry/__init__.py", "confluent_kafka/schema_registry/avro.py"]
    for name in keep + gone:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(name)
    # the optional parts: dask.dataframe raises ImportError, schema_registry ModuleNotFoundError (both go),
    # avro another error (it stays: only a missing requirement tells that a part cannot be used)
    for name in ("dask/__init__.py", "confluent_kafka/__init__.py"):
        (site / name).write_text("")
    (site / "confluent_kafka/avro/__init__.py").write_text("raise RuntimeError('not a missing requirement')")
    (site / "dask/dataframe/__init__.py").write_text("raise ImportError('Dask dataframe requirements missing')")
    (site / "confluent_kafka/schema_registry/__init__.py").write_text("import certifi_absent_from_here_xyz")

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "strip").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/stripped\nexec {tools["strip"]} "$@"\n')
    (fake / "strip").chmod(0o755)
    (fake / "python").symlink_to(sys.executable)  # the image's `python` is its venv's
    r = subprocess.run(["sh", "-c", cut.replace(SITE_PACKAGES, str(site))], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [n for n in keep if not (site / n).exists()] == []
    assert [n for n in gone if (site / n).exists()] == []

    # strip was given every candidate but the auditwheel-repaired ones, each time into a copy (-o)
    calls = [shlex.split(line) for line in (tmp_path / "stripped").read_text().splitlines()]
    assert all(c[:2] == ["--strip-unneeded", "-o"] for c in calls), calls
    assert sorted(os.path.normpath(c[-1]) for c in calls) == \
        sorted(plain + [patched, "llvmlite/binding/libllvmlite.so"])
    assert f"not stripped: ./{patched}" in r.stdout, r.stdout
    for name in [patched, rpath] + libs:  # left byte for byte as they were
        assert (site / name).read_bytes() == elf[name], name
    for name in plain + ["llvmlite/binding/libllvmlite.so"]:  # stripped: smaller, the same to the loader
        path = site / name
        assert path.stat().st_size < len(elf[name]) and ".symtab" not in readelf(path, "-SW"), name
        original = tmp_path / "original.so"
        original.write_bytes(elf[name])
        assert loaded_segments(path) == loaded_segments(original), name
        assert readelf(path, "-dW", "--dyn-syms") == readelf(original, "-dW", "--dyn-syms"), name
    for name in plain:  # and still import (module name from the file name, in its package)
        module = name.split(".")[0].replace("/", ".")
        code = ("import importlib.machinery as m, importlib.util as u, sys; "
                f"s = u.spec_from_file_location({module!r}, {str(site / name)!r}, "
                f"loader=m.ExtensionFileLoader({module!r}, {str(site / name)!r})); u.module_from_spec(s)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (name, r.stderr)
    # identical *.libs/ files are one file now; different ones stay apart
    assert os.path.samefile(site / quadmath, site / twin)
    assert os.stat(site / other).st_nlink == 1


def readelf(path: Path, *options: str) -> str:
    r = subprocess.run(["readelf", *options, str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.replace(str(path), "FILE")


def test_dockerfile_requirements_are_the_projects(tmp_path):
    """The requirement files the image installs, made from pyproject.toml by the Dockerfile's own command."""
    (command,) = [c for c in stage_commands(dockerfile_lines()) if c.startswith("python -c ")
                  and "requirements.txt" in c]
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    r = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (tmp_path / "requirements.txt").read_text().split("\n") == project["dependencies"]
    assert (tmp_path / "requirements-k8s.txt").read_text().split("\n") == project["optional-dependencies"]["k8s"]


def test_checkov_passes_on_the_dockerfile():
    checkov = TOOLS / "checkov"
    assert checkov.exists(), "checkov is missing: make setup-tools (make test does it)"
    r = subprocess.run([str(checkov), "-f", str(ROOT / "Dockerfile"), "--framework", "dockerfile", "--compact",
                        "--quiet"], capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]


# ------------------------------------------------------------------ commands in the manifests


def rendered(overlay: str) -> list[dict]:
    assert KUSTOMIZE.exists(), "kustomize is missing: make setup-tools (make test does it)"
    r = subprocess.run([str(KUSTOMIZE), "build", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return spec["template"]["spec"]["containers"]
    if doc["kind"] == "DaskCluster":
        return spec["scheduler"]["spec"]["containers"] + spec["worker"]["spec"]["containers"]
    return []


def check_command(argv: list[str], where: str) -> None:
    """``argv`` (after the image's entrypoint ``tweetoscope``) parses, or names an installed executable."""
    argv = [re.sub(r"\$\((\w+)\)", "x", a) for a in argv]  # Kubernetes $(VAR) references
    if argv[0] in ("dask",):
        assert shutil.which(argv[0], path=str(Path(sys.executable).parent)), f"{where}: {argv[0]} not installed"
        r = subprocess.run([str(Path(sys.executable).parent / argv[0]), *argv[1:2], "--help"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, f"{where}: {' '.join(argv[:2])} --help failed: {r.stderr}"
        return
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{where}: `tweetoscope {shlex.join(argv)}` is not a valid command") from exc


@pytest.mark.parametrize("overlay", ["minikube", "production"])
def test_every_command_the_manifests_run_exists(overlay):
    seen = 0
    for doc in rendered(overlay):
        for c in containers(doc):
            if not c["image"].rsplit("/", 1)[-1].startswith("tweetoscope"):
                continue
            check_command(c.get("command", []) + c.get("args", []) if c.get("command") else c["args"],
                          f"{doc['kind']}/{doc['metadata']['name']}")
            seen += 1
    assert seen >= 7  # 4 stages, the dashboard, the Dask scheduler and workers


def test_every_command_docker_compose_runs_exists():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        if not svc["image"].startswith("tweetoscope"):
            continue
        argv = svc.get("entrypoint") or svc.get("command")
        check_command(argv, f"docker-compose service {name}")


# ------------------------------------------------------------------ dask-kubernetes resources


def crd_schema(kind: str) -> dict:
    import dask_kubernetes

    crds = Path(dask_kubernetes.__file__).parent / "operator/deployment/helm/dask-kubernetes-operator/crds"
    for path in crds.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
            return version["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind}")


def unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Fields the API server would prune: keys absent from an object schema's properties."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            if key not in schema["properties"]:
                if not schema.get("additionalProperties"):
                    out.append(f"{path}.{key}")
                continue
            out += unknown_fields(sub, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, sub in value.items():
            out += unknown_fields(sub, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def validate_against_crd(doc: dict) -> None:
    assert doc["apiVersion"] == "kubernetes.dask.org/v1"
    schema = crd_schema(doc["kind"])
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.validate(body, schema)
    assert unknown_fields(body, schema) == []


@pytest.mark.parametrize("name", ["daskcluster.yaml", "daskautoscaler.yaml"])
def test_operator_manifests_match_the_crds(name):
    validate_against_crd(yaml.safe_load((K8S / "operator" / name).read_text()))


def test_the_crd_check_catches_unknown_and_bad_fields():
    doc = yaml.safe_load((K8S / "operator" / "daskcluster.yaml").read_text())
    doc["spec"]["worker"]["replica"] = 3  # a typo: pruned silently by the API server
    with pytest.raises(AssertionError):
        validate_against_crd(doc)
    doc = yaml.safe_load((K8S / "operator" / "daskautoscaler.yaml").read_text())
    doc["spec"]["minimum"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd(doc)


def test_cluster_spec_generation_is_a_valid_daskcluster():
    from tweetoscope.k8s import cluster_spec

    spec = cluster_spec(name="tw-test", image="registry.example.com/tweetoscope:9", workers=4)
    validate_against_crd(spec)
    assert spec["metadata"]["name"] == "tw-test" and spec["spec"]["worker"]["replicas"] == 4
    assert spec["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == "tw-test"
    assert {c["image"] for part in ("scheduler", "worker") for c in spec["spec"][part]["spec"]["containers"]} == \
        {"registry.example.com/tweetoscope:9"}


# ------------------------------------------------------------------ kustomize overlays


def env_of(doc: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])}


def by_kind(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    return doc


def test_production_overlay_replicates_kafka_three_times():
    docs = rendered("production")
    kafka = by_kind(docs, "StatefulSet", "kafka")
    env = env_of(kafka)
    assert kafka["spec"]["replicas"] == 3 and len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3
    assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert kafka["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    config = by_kind(docs, "ConfigMap", "tweetoscope-config")["data"]
    assert config["TWEETOSCOPE_REPLICATION"] == "3"
    assert all(d["metadata"].get("namespace") == "tweetoscope" for d in docs if d["kind"] != "Namespace")
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] != "dashboard":
            c = d["spec"]["template"]["spec"]["containers"][0]
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert d["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"] == \
                by_kind(docs, "ConfigMap", "tweetoscope-config")["metadata"]["name"]  # the hashed name


def test_minikube_overlay_is_one_node_kafka():
    docs = rendered("minikube")
    kafka = by_kind(docs, "StatefulSet", "kafka")
    env = env_of(kafka)
    assert kafka["spec"]["replicas"] == 1 and env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "0@kafka-0.kafka-headless:9093"
    for key in ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", key
    assert by_kind(docs, "ConfigMap", "tweetoscope-config")["data"]["TWEETOSCOPE_REPLICATION"] == "1"
    assert by_kind(docs, "DaskAutoscaler", "tweetoscope")["spec"] == {"cluster": "tweetoscope", "minimum": 1,
                                                                     "maximum": 3}


@pytest.mark.parametrize("overlay", ["minikube", "production"])
def test_rendered_manifests_validate(overlay, tmp_path):
    import kubernetes_validate

    for doc in rendered(overlay):
        if doc["apiVersion"].startswith("kubernetes.dask.org/"):
            validate_against_crd(doc)
        else:
            kubernetes_validate.validate(doc, "1.30", strict=True)


def test_checkov_passes_on_the_production_manifests(tmp_path):
    checkov = TOOLS / "checkov"
    assert checkov.exists(), "checkov is missing: make setup-tools (make test does it)"
    out = tmp_path / "production.yaml"
    out.write_text(yaml.safe_dump_all(rendered("production")))
    # Skipped, on purpose: CKV_K8S_43 image digests (tags until a registry is chosen), CKV_K8S_15
    # pull policy Always (immutable version tags), CKV_K8S_11 CPU limits (throttling hurts latency;
    # requests are set), CKV_K8S_22/40 for the Kafka image (it writes under /opt/kafka as uid 1000).
    r = subprocess.run([str(checkov), "-f", str(out), "--framework", "kubernetes", "--compact", "--quiet",
                        "--skip-check", "CKV_K8S_43,CKV_K8S_15,CKV_K8S_11,CKV_K8S_22,CKV_K8S_40"],
                       capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"}, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]


# ------------------------------------------------------------------ tweetoscope cluster, without a cluster


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, **env}
    e.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run([sys.executable, "-m", "tweetoscope", *args], capture_output=True, text=True, env=e,
                          cwd=ROOT, timeout=120)


def test_cluster_print_spec_is_the_manifest_with_overrides():
    r = run_cli("cluster", "up", "--print-spec", "--name", "tw2", "--image", "img:1", "--min", "3", "--max", "5")
    assert r.returncode == 0, r.stderr
    spec = yaml.safe_load(r.stdout)
    validate_against_crd(spec)
    assert spec["metadata"]["name"] == "tw2" and spec["spec"]["worker"]["replicas"] == 3


@pytest.mark.parametrize("args", [("cluster", "up", "--min", "5", "--max", "2"), ("cluster", "up", "--max", "0")])
def test_cluster_rejects_bad_bounds(args):
    r = run_cli(*args)
    assert r.returncode == 2 and "--min" in r.stderr


@pytest.mark.parametrize("action", ["up", "status", "down"])
def test_cluster_without_credentials_says_so(action, tmp_path):
    r = run_cli("cluster", action, KUBECONFIG=str(tmp_path / "no-kubeconfig"), HOME=str(tmp_path))
    assert r.returncode == 2
    assert "Kubernetes cluster reachable" in r.stderr and "Traceback" not in r.stderr


def test_run_on_k8s_without_credentials_says_so(tmp_path):
    r = run_cli("run", "--data", str(ROOT / "data" / "sample"), "--cluster", "k8s", "--no-dashboard",
                KUBECONFIG=str(tmp_path / "no-kubeconfig"), HOME=str(tmp_path))
    assert r.returncode == 2 and "Kubernetes cluster reachable" in r.stderr
