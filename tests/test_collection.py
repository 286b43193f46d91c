"""The repository as the Ansible collection cloudx.security: galaxy.yml and meta/runtime.yml, the tarball that
`ansible-galaxy collection build` makes, its offline installation, the roles by FQCN in a playbook outside the
repository (the scanner role in check mode and in a real nmap scan of 127.0.0.1), and the sanity checks that
run here without a network (ansible-test's own where they need no virtual environment of their own).

Every ansible command runs with ANSIBLE_COLLECTIONS_PATH and ANSIBLE_ROLES_PATH pointing into the test's own
directories, from a directory outside the repository: only the installed collection can provide the roles
(~/.ansible may hold other copies, molecule installs them there).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.support.ansible import ansible_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
TARBALL = f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
ROLES = ["cloudx_agent_linux", "cloudx_agent_mac", "cloudx_agent_windows", "scanner"]
MODULES = ["cloudx_scan", "cloudx_scan_cleanup", "cloudx_scan_status"]
EXAMPLE = ROOT / "playbooks" / "examples" / "fqcn_site.yml"

# A role in a collection gets no plugins from its own library/ and module_utils/ (ansible-core only adds
# those for roles found on roles_path), so the scanner role's tasks (`cloudx_scan: ...`) resolve to
# cloudx.security.cloudx_scan only when the modules are the collection's plugins/modules/ and their
# module_utils the collection's plugins/module_utils/.
HAS_PLUGINS = (
    all((ROOT / "plugins" / "modules" / f"{m}.py").is_file() for m in MODULES)
    and (ROOT / "plugins" / "module_utils" / "cloudx_scanner.py").is_file()
)
needs_plugins = pytest.mark.xfail(
    not HAS_PLUGINS,
    reason="the scanner's modules are not in plugins/modules (and cloudx_scanner in plugins/module_utils) yet: "
    "installed as a collection, the scanner role cannot find cloudx_scan",
    strict=True,
)

# Everything the tarball may hold at its top level; anything else (a new folder in the repository) must be
# named in galaxy.yml's build_ignore or here.
TOP_LEVEL = {
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "meta",
    "roles",
    "playbooks",
    "plugins",
    "docs",
    "scripts",
}
NEVER_SHIPPED = {"controller", "tests", "bench", "tools", "ee", "inventory", ".ci", ".config", ".venv", "artifacts", "scan-results"}
NEVER_ANYWHERE = {"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "molecule", ".git"}

# The ansible-test sanity tests that run on this machine: those needing a virtual environment of their own
# (validate-modules, pylint, pep8, yamllint, import, ansible-doc, runtime-metadata) install packages into
# it, which needs a network. Those are replaced by the offline checks further down.
OFFLINE_SANITY_TESTS = [
    "action-plugin-docs",
    "changelog",
    "compile",
    "empty-init",
    "ignores",
    "line-endings",
    "no-assert",
    "no-get-exception",
    "no-illegal-filenames",
    "no-smart-quotes",
    "replace-urlopen",
    "shebang",
    "symlinks",
    "use-argspec-type-path",
    "use-compat-six",
]
# What the collection accepts from them, with the reason (written as tests/sanity/ignore-<version>.txt into
# the installed collection; ansible-test's "ignores" test fails on an entry that matches nothing).
SANITY_IGNORES = {
    "scripts/linux/remove-threat.py shebang": "the active response runs on agents that have python3 but may lack python",
    "plugins/modules/cloudx_scan_cleanup.py use-argspec-type-path": "expands ansible's remote_tmp and the home directory, no argument",
}
SANITY_ROOT = Path(importlib.util.find_spec("ansible_test").origin).parent / "_util"  # type: ignore[arg-type,union-attr]


def collection_env(base: Path, **extra: str) -> dict[str, str]:
    """A collection user's environment: the venv's tools, only the test's collections and roles."""
    paths = {"ANSIBLE_COLLECTIONS_PATH": str(base / "collections"), "ANSIBLE_ROLES_PATH": str(base / "roles")}
    return ansible_env(clean=True, **{"PWD": str(base), "ANSIBLE_RETRY_FILES_ENABLED": "false", **paths, **extra})


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the repository with collections/ and roles/ (empty) for the ansible commands."""
    path = tmp_path_factory.mktemp("collection")
    (path / "collections").mkdir()
    (path / "roles").mkdir()
    return path


@pytest.fixture(scope="module")
def tarball(base: Path) -> Path:
    out = base / "dist"
    result = run([str(BIN / "ansible-galaxy"), "collection", "build", str(ROOT), "--output-path", str(out)], base, collection_env(base))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Created collection for {FQCN}" in result.stdout
    path = out / TARBALL
    assert path.is_file(), sorted(out.iterdir())
    return path


@pytest.fixture(scope="module")
def installed(base: Path, tarball: Path) -> Path:
    """The collection installed from the tarball, offline, into <base>/collections."""
    result = run(
        [str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(base / "collections"), "--offline"],
        base,
        collection_env(base),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{FQCN}:{GALAXY['version']} was installed successfully" in result.stdout
    path = base / "collections" / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    assert (path / "MANIFEST.json").is_file()
    return path


@pytest.fixture
def outside(base: Path, installed: Path, tmp_path: Path) -> Path:
    """A playbook directory outside the repository: the example playbook and an inventory with this machine
    as the scanner (and a documentation address as an agent, never contacted)."""
    shutil.copy(EXAMPLE, tmp_path / EXAMPLE.name)
    (tmp_path / "inventory.yml").write_text(
        "all:\n  children:\n    scanners:\n      hosts:\n        localhost:\n          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
        "    agents:\n      hosts:\n        web-01: {ansible_host: 192.0.2.21}\n"
    )
    return tmp_path


def playbook(outside: Path, base: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "ansible-playbook"), "-i", "inventory.yml", *args], outside, collection_env(base, PWD=str(outside)), timeout)


# --- metadata ---------------------------------------------------------------------------------------------


def test_galaxy_and_runtime_metadata():
    from ansible.release import __version__ as core_version
    from packaging.specifiers import SpecifierSet

    assert FQCN == "cloudx.security"
    assert re.fullmatch(r"\d+\.\d+\.\d+", GALAXY["version"])
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert core_version in SpecifierSet(runtime["requires_ansible"]), (core_version, runtime["requires_ansible"])
    # The Windows role's collections are dependencies; the community "ansible" package ships both.
    assert set(GALAXY["dependencies"]) == {"ansible.windows", "community.windows"}
    for role in ROLES:
        info = yaml.safe_load((ROOT / "roles" / role / "meta" / "main.yml").read_text())["galaxy_info"]
        assert (info["namespace"], info["role_name"]) == (GALAXY["namespace"], role)
        assert (ROOT / "roles" / role / "meta" / "argument_specs.yml").is_file()


def test_collection_metadata_lints_clean(tmp_path: Path):
    """ansible-lint's galaxy, schema and meta-runtime rules on galaxy.yml, meta/runtime.yml, the EE definition
    and the example playbook. A changelog (galaxy[no-changelog]) and the repository's public address
    (galaxy[no-repository], needed to publish on Galaxy) are not there yet: warnings."""
    paths = ["galaxy.yml", "meta/runtime.yml", "execution-environment.yml", "ee/requirements.yml", "playbooks/examples"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    env["PWD"], env["NO_COLOR"] = str(tmp_path), "1"
    result = run(
        [
            str(BIN / "ansible-lint"),
            "--offline",
            "--profile",
            "production",
            "-w",
            "galaxy[no-changelog]",
            "-w",
            "galaxy[no-repository]",
            *paths,
        ],
        ROOT,
        env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- build and install ------------------------------------------------------------------------------------


def test_tarball_holds_the_roles_and_nothing_of_the_controller(tarball: Path):
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
        files = json.load(tar.extractfile("FILES.json"))  # type: ignore[arg-type]
    names = set(members)
    assert {PurePosixPath(n).parts[0] for n in names} <= TOP_LEVEL, sorted({PurePosixPath(n).parts[0] for n in names} - TOP_LEVEL)
    for name in names:
        parts = PurePosixPath(name).parts
        assert parts[0] not in NEVER_SHIPPED, name
        assert not NEVER_ANYWHERE & set(parts), name
        assert not name.endswith((".pyc", ".tar.gz", ".retry")) and not parts[-1].startswith("scans.db"), name
        assert parts[-1] not in {"execution-environment.yml", "ansible.cfg", "pyproject.toml", "ruff.toml"}, name
    required = {"meta/runtime.yml", "README.md", "playbooks/scan.yml", "playbooks/examples/fqcn_site.yml"}
    for role in ROLES:
        required |= {f"roles/{role}/tasks/main.yml", f"roles/{role}/meta/main.yml", f"roles/{role}/meta/argument_specs.yml"}
    assert required <= names, sorted(required - names)
    assert any(n.endswith("/cloudx_scan.py") for n in names) and any(n.endswith("/cloudx_scanner.py") for n in names)
    # Symbolic links (remove-threat.py, the modules) point at files that are in the tarball too.
    for name, member in members.items():
        if member.issym():
            target = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
            assert target in names and members[target].isfile(), (name, member.linkname)
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == (GALAXY["namespace"], GALAXY["name"], GALAXY["version"])
    assert info["dependencies"] == GALAXY["dependencies"]
    listed = {f["name"] for f in files["files"] if f["name"] != "."}
    assert listed == names - {"MANIFEST.json", "FILES.json"}


def test_install_offline_gives_a_usable_collection(base: Path, installed: Path):
    listing = run([str(BIN / "ansible-galaxy"), "collection", "list", FQCN, "--format", "json"], base, collection_env(base))
    assert listing.returncode == 0, listing.stderr
    found = {path: cols for path, cols in json.loads(listing.stdout).items() if FQCN in cols}
    assert found == {str(installed.parent.parent): {FQCN: {"version": GALAXY["version"]}}}, found
    # The active response script reaches the role through its link.
    script = installed / "roles" / "cloudx_agent_linux" / "files" / "remove-threat.py"
    assert script.is_file() and script.read_text().startswith("#!")
    # The roles' argument specs, as ansible-doc shows them from the installed collection.
    for role in ROLES:
        doc = run([str(BIN / "ansible-doc"), "-t", "role", "--json", f"{FQCN}.{role}"], base, collection_env(base))
        assert doc.returncode == 0, doc.stderr
        entry = json.loads(doc.stdout)[f"{FQCN}.{role}"]
        assert entry["collection"] == FQCN and entry["entry_points"]["main"]["options"], role
    scanner = json.loads(run([str(BIN / "ansible-doc"), "-t", "role", "--json", f"{FQCN}.scanner"], base, collection_env(base)).stdout)[
        f"{FQCN}.scanner"
    ]
    assert {"scanner_tool", "scanner_scan_type", "scanner_target"} <= set(scanner["entry_points"]["main"]["options"])
    assert {"main", "cleanup", "install"} == set(scanner["entry_points"])


# --- the roles by FQCN, outside the repository ------------------------------------------------------------


def test_agent_role_by_fqcn_runs_from_the_collection(base: Path, outside: Path):
    """cloudx.security.cloudx_agent_linux from the installed collection, against this machine in check mode:
    without a manager address its validation refuses before anything on the host is read or changed."""
    (outside / "agent.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles:\n    - role: cloudx.security.cloudx_agent_linux\n"
    )
    listed = playbook(outside, base, "agent.yml", "--list-tasks")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "cloudx.security.cloudx_agent_linux : Check what the agent needs to be installed" in listed.stdout
    result = playbook(outside, base, "agent.yml", "--check", "-vv")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"task path: {base / 'collections'}" in result.stdout
    assert "Invalid agent settings" in result.stdout
    assert "failed=1" in result.stdout and "changed=0" in result.stdout


@needs_plugins
def test_example_playbook_lists_both_roles_by_fqcn(base: Path, outside: Path):
    result = playbook(outside, base, EXAMPLE.name, "--list-tasks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cloudx.security.scanner : Check the scan request" in result.stdout
    assert "cloudx.security.cloudx_agent_linux : Check what the agent needs to be installed" in result.stdout
    # The collection's own playbooks: playbooks/scan.yml as cloudx.security.scan.
    result = playbook(outside, base, f"{FQCN}.scan", "--list-tasks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Check the scan request" in result.stdout


def test_example_playbook_lints_clean_against_the_built_collection(base: Path, outside: Path):
    """The example outside the repository with the installed collection, without the repository's mocks."""
    (outside / ".ansible-lint").write_text("---\n{}\n")
    env = collection_env(base, PWD=str(outside), NO_COLOR="1")
    result = run([str(BIN / "ansible-lint"), "--offline", "--profile", "production", EXAMPLE.name], outside, env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed" in result.stdout + result.stderr


SCAN_VARS = ["-e", "scanner_tool=nmap", "-e", "scanner_scan_type=default", "-e", "scanner_target=127.0.0.1"]


@needs_plugins
def test_scanner_role_by_fqcn_check_mode_shows_the_planned_command(base: Path, outside: Path):
    result = playbook(outside, base, EXAMPLE.name, "--check", "-vv", "--limit", "scanners", *SCAN_VARS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"task path: {base / 'collections'}" in result.stdout
    planned = [json.loads(line.split(" => ", 1)[1]) for line in result.stdout.splitlines() if '"state": "planned"' in line]
    assert len(planned) == 1, result.stdout
    argv = planned[0]["argv"]
    assert argv[0] == "nmap" and argv[-2:] == ["--", "127.0.0.1"] and "-F" in argv and "-T4" in argv, argv
    assert "changed=0" in result.stdout and "failed=0" in result.stdout
    assert not (outside / "scan-results").exists()


@pytest.mark.integration
@needs_plugins
def test_scanner_role_by_fqcn_scans_loopback(base: Path, outside: Path):
    """A real nmap scan of 127.0.0.1, ports 1-10: the modules and module_utils come from the collection."""
    work = outside / "work"
    result = playbook(
        outside,
        base,
        EXAMPLE.name,
        "--limit",
        "scanners",
        *SCAN_VARS,
        "-e",
        "scanner_ports=1-10",
        "-e",
        "scanner_scan_id=fqcn-1",
        "-e",
        f"scanner_work_dir={work}",
        "-vv",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"task path: {base / 'collections'}" in result.stdout
    results = outside / "scan-results" / "fqcn-1" / "localhost"  # $PWD/scan-results by default
    summary = json.loads((results / "summary.json").read_text())
    assert summary["state"] == "completed" and summary["rc"] == 0, summary
    assert summary["argv"][-2:] == ["--", "127.0.0.1"] and summary["hosts_up"] == 1
    hosts = [json.loads(line) for line in (results / "hosts.jsonl").read_text().splitlines()]
    assert [h["address"] for h in hosts] == ["127.0.0.1"]
    assert sorted(p["port"] for p in hosts[0]["ports"]) == list(range(1, 11))
    assert (results / "raw.xml").read_text().lstrip().startswith("<?xml")
    assert not (work / "fqcn-1").exists()  # the role removes its work directory


# --- sanity ------------------------------------------------------------------------------------------------


@needs_plugins
def test_ansible_test_sanity_offline_tests_pass(base: Path, installed: Path, tmp_path: Path):
    """ansible-test sanity, run from the installed ansible_collections/cloudx/security tree (a copy: it writes
    tests/output there), with the tests that need no virtual environment of their own."""
    tree = tmp_path / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    shutil.copytree(installed, tree, symlinks=True)
    from ansible.release import __version__ as core_version

    major_minor = ".".join(core_version.split(".")[:2])
    (tree / "tests" / "sanity").mkdir(parents=True)
    (tree / "tests" / "sanity" / f"ignore-{major_minor}.txt").write_text(
        "".join(f"{entry}  # {why}\n" for entry, why in SANITY_IGNORES.items())
    )
    tests = [arg for name in OFFLINE_SANITY_TESTS for arg in ("--test", name)]
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    # HOME: ansible-test keeps its virtual environments under ~/.ansible/test.
    env = collection_env(base, HOME=str(tmp_path / "home"))
    result = run([str(BIN / "ansible-test"), "sanity", *tests, "--python", python, "-v"], tree, env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = re.findall(r'Running sanity test "([^"]+)"', result.stdout)
    assert set(ran) == set(OFFLINE_SANITY_TESTS), ran
    assert "ERROR" not in result.stdout + result.stderr


def documentation(path: Path) -> dict[str, Any]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["DOCUMENTATION"]:
            return yaml.safe_load(node.value.value)  # type: ignore[attr-defined]
    raise AssertionError(f"{path} has no DOCUMENTATION")


def yamllint(installed: Path, paths: list[str]) -> list[str]:
    """ansible-test's yamllint check, its own yamllinter and configurations with this venv's yamllint."""
    linter = SANITY_ROOT / "controller" / "sanity" / "yamllint" / "yamllinter.py"
    result = subprocess.run(
        [sys.executable, str(linter)], input="\n".join(paths), cwd=installed, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [f"{m['path']}:{m['line']}: {m['code']}: {m['message']}" for m in json.loads(result.stdout)["messages"]]


def module_file(installed: Path, module: str) -> Path:
    """The module's file in the collection: plugins/modules, or (before those exist) the scanner role's library/."""
    plugin = installed / "plugins" / "modules" / f"{module}.py"
    return plugin if plugin.is_file() else installed / "roles" / "scanner" / "library" / f"{module}.py"


def test_yaml_files_of_the_collection_lint_clean(installed: Path):
    paths = sorted(str(p.relative_to(installed)) for p in installed.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    assert "meta/runtime.yml" in paths and "roles/scanner/tasks/main.yml" in paths
    assert yamllint(installed, paths) == []


# Defects in the modules' documentation that these checks find (none now; an entry makes its module's checks a
# strict xfail, to be dropped when it is fixed).
DOC_DEFECTS: dict[str, str] = {}
SPEC_DEFECTS: dict[str, str] = {**DOC_DEFECTS}


def module_params(defects: dict[str, str], plugins: bool) -> list[Any]:
    params = []
    for module in MODULES:
        marks = []
        if plugins and not HAS_PLUGINS:
            marks.append(needs_plugins)
        elif module in defects:
            marks.append(pytest.mark.xfail(reason=defects[module], strict=True))
        params.append(pytest.param(module, marks=marks, id=module))
    return params


@pytest.mark.parametrize("module", module_params(DOC_DEFECTS, plugins=False))
def test_module_docs_lint_clean(installed: Path, module: str, tmp_path: Path):
    """DOCUMENTATION, EXAMPLES and RETURN of each module, as ansible-test's yamllint reads them (it reads the
    documentation of plugins/modules/*.py only, hence the copy there)."""
    (tmp_path / "plugins" / "modules").mkdir(parents=True)
    shutil.copy(module_file(installed, module), tmp_path / "plugins" / "modules" / f"{module}.py")
    assert yamllint(tmp_path, [f"plugins/modules/{module}.py"]) == []


# Spec comparison as validate-modules does it, for what validate-modules cannot check here (it needs
# voluptuous and antsibull-docs-parser in a virtual environment ansible-test fills from the network).
ARGSPEC_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[2]])._install()
from validate_modules.module_args import get_py_argument_spec
spec, kwargs = get_py_argument_spec(sys.argv[3], sys.argv[4])
print(json.dumps({"spec": spec, "check_mode": kwargs.get("supports_check_mode", False)}))
"""


@pytest.mark.parametrize("module", module_params(SPEC_DEFECTS, plugins=True))
def test_module_documentation_matches_its_argument_spec(base: Path, installed: Path, module: str):
    doc = run([str(BIN / "ansible-doc"), "-t", "module", "--json", f"{FQCN}.{module}"], base, collection_env(base))
    assert doc.returncode == 0, doc.stderr
    shown = json.loads(doc.stdout)[f"{FQCN}.{module}"]
    assert shown["doc"]["short_description"] and shown["doc"]["description"]
    assert shown["examples"] and shown["return"] is not None, "EXAMPLES and RETURN are required in a collection's module"
    assert shown["doc"].get("author"), "DOCUMENTATION needs author"
    result = run(
        [
            sys.executable,
            "-c",
            ARGSPEC_SCRIPT,
            str(SANITY_ROOT / "controller" / "sanity" / "validate-modules"),
            str(base / "collections"),
            f"plugins/modules/{module}.py",
            f"ansible_collections/{GALAXY['namespace']}/{GALAXY['name']}",
        ],
        installed,
        collection_env(base),
    )
    assert result.returncode == 0, result.stderr
    captured = json.loads(result.stdout)
    spec, options = captured["spec"], documentation(installed / "plugins" / "modules" / f"{module}.py")["options"]
    assert set(spec) == set(options), (sorted(spec), sorted(options))
    for name, arg in spec.items():
        documented = options[name]
        assert documented.get("description"), f"{module}: option {name} has no description"
        assert documented.get("type", "str") == arg.get("type", "str"), name
        assert bool(documented.get("required", False)) == bool(arg.get("required", False)), name
        assert documented.get("default") == arg.get("default"), name
        assert documented.get("choices") == arg.get("choices"), name
        assert documented.get("elements") == arg.get("elements"), name


# --- the execution environment ----------------------------------------------------------------------------


def test_execution_environment_build_context(base: Path, tarball: Path, tmp_path: Path):
    """`ansible-builder create` makes the build context (no image is built here): the Containerfile, and in
    _build/ the requirement files and the collection's tarball, which the galaxy stage installs offline."""
    import hashlib

    definition = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert definition["version"] == 3
    # The EE definition with its inputs, and the tarball where it expects it (dist/, as built at the root).
    work = tmp_path / "ee-src"
    work.mkdir()
    shutil.copy(ROOT / "execution-environment.yml", work)
    shutil.copytree(ROOT / "ee", work / "ee")
    (work / "dist").mkdir()
    shutil.copy(tarball, work / "dist" / TARBALL)
    context = tmp_path / "context"
    result = run(
        [
            str(BIN / "ansible-builder"),
            "create",
            "-f",
            "execution-environment.yml",
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        work,
        collection_env(base),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core>=2.19,<2.20 ansible-runner>=2.4,<2.5"' in containerfile
    assert "COPY _build /build" in containerfile
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    assert "COPY _build/requirements.txt requirements.txt" in containerfile and "COPY _build/bindep.txt bindep.txt" in containerfile
    assert "ansible-doc -t role cloudx.security.scanner" in containerfile
    build = context / "_build"
    shipped = build / "collections" / TARBALL
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == hashlib.sha256(tarball.read_bytes()).hexdigest()
    for name in ("requirements.yml", "requirements.txt", "bindep.txt"):
        assert (build / name).read_text() == (ROOT / "ee" / name).read_text(), name
    requirements = yaml.safe_load((build / "requirements.yml").read_text())["collections"]
    # The collection from the context, never from Galaxy (the tarball's name carries galaxy.yml's version).
    assert {"name": f"collections/{TARBALL}", "type": "file"} in requirements
    assert {r["name"] for r in requirements if r.get("type") != "file"} == set(GALAXY["dependencies"])
    python = (build / "requirements.txt").read_text()
    assert "pywinrm[credssp]>=0.5,<0.6" in python and "pypsrp>=0.8,<1" in python
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert all(f'"{line}"' in pyproject for line in python.splitlines() if line and not line.startswith("#"))  # same pins

    # The galaxy stage, offline: `ansible-galaxy collection install -r requirements.yml` in _build/ (the
    # image's /build). Its dependencies are found installed (the "ansible" package ships them).
    collections = tmp_path / "ee-collections"
    result = run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "-r", "requirements.yml", "-p", str(collections), "--offline"],
        build,
        collection_env(base, ANSIBLE_COLLECTIONS_PATH=str(collections)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (collections / "ansible_collections" / "cloudx" / "security" / "roles" / "scanner" / "tasks" / "main.yml").is_file()
    # The builder stage's introspection of what the image gets: our Python and system packages.
    result = run(
        [
            sys.executable,
            str(build / "scripts" / "introspect.py"),
            "introspect",
            "--user-pip=requirements.txt",
            "--user-bindep=bindep.txt",
            str(collections),
        ],
        build,
        collection_env(base),
    )
    assert result.returncode == 0, result.stderr
    found = yaml.safe_load(result.stdout)
    assert any(line.startswith("pywinrm[credssp]") for line in found["python"])
    system = [line.split()[0] for line in found["system"]]
    assert {"nmap", "masscan", "zmap", "iproute", "openssh-clients", "sshpass"} <= set(system)
    # bindep reads the file (on this Debian machine: the dpkg names).
    result = run([str(BIN / "bindep"), "-f", str(build / "bindep.txt"), "--list_all", "newline"], build, collection_env(base))
    assert result.returncode == 0, result.stderr
    assert {"nmap", "masscan", "zmap", "iproute2", "openssh-client", "sshpass"} == set(result.stdout.split())
