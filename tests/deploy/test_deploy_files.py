"""deploy/ is not importable, so it is checked by parsing: every file must agree with the code.

Nothing here can run docker, kubectl or ``ray up``. Instead each file is parsed and the
fields that matter are compared with their single source of truth: ``pyproject.toml``
(Python version, console script, version), ``requirements.lock`` (torch, Ray), the typer
app (``segpipe run`` options), :mod:`flows.schedule` (cron, time zone, names) and
``flows/nightly.py`` (the flow's parameters, read with :mod:`ast`).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest
import yaml

from flows.schedule import DEFAULT_CRON, DEFAULT_TIMEZONE, DEPLOYMENT_NAME, FLOW_NAME, WORK_POOL

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
NIGHTLY = ROOT / "flows" / "nightly.py"
ENTRYPOINT = f"flows/nightly.py:{FLOW_NAME}"
DEPLOY_YAMLS = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


# ---------------------------------------------------------------- helpers (no side effects)

@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case) and its argument text."""

    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions: comments dropped, ``\\`` continuations joined.

    >>> [(i.keyword, i.args) for i in parse_dockerfile('# c\\nFROM a:1\\nRUN x \\\\\\n  && y\\n')]
    [('FROM', 'a:1'), ('RUN', 'x && y')]
    """
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return instructions


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace ``${NAME}`` and ``$NAME`` by their values; unknown names are kept.

    >>> substitute("nvidia/cuda:${TAG}-x $HOME", {"TAG": "12.8.1"})
    'nvidia/cuda:12.8.1-x $HOME'
    """
    def repl(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, text)


def build_args(instructions: list[Instruction]) -> dict[str, str]:
    """Default values of every ``ARG NAME=value`` (before or after FROM)."""
    args = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            args[name.strip()] = value.strip().strip('"')
    return args


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    """``ENV A=1 B=2`` instructions as a dict (the ``KEY=value`` form only)."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                if sep:
                    env[key] = value
    return env


def pip_installs(command: str) -> Iterator[list[str]]:
    """The argument lists of each ``pip install`` in a shell command line."""
    for part in re.split(r"&&|\|\||;", command):
        tokens = shlex.split(part)
        for i in range(len(tokens) - 1):
            if tokens[i] == "pip" and tokens[i + 1] == "install":
                yield tokens[i + 2:]
                break


def sed_expression(command: str) -> str:
    """The expression of the first ``sed -E EXPR`` in a shell command line."""
    for part in re.split(r"&&|\|\||;", command):
        tokens = shlex.split(part)
        if tokens[:2] == ["sed", "-E"]:
            return tokens[2]
    raise AssertionError(f"no `sed -E` in {command!r}")


def apply_sed(expression: str, text: str) -> str:
    """Run ``sed -E expression`` over text (what the image build does to the lock)."""
    if shutil.which("sed") is None:
        pytest.skip("sed is not installed")
    proc = subprocess.run(["sed", "-E", expression], input=text, capture_output=True,
                          text=True, check=True, timeout=10)
    return proc.stdout


def lock_pins() -> dict[str, str]:
    """``requirements.lock`` as {normalised name: pinned version}."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.strip().partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore patterns exclude ``path`` (last match wins, ``!`` re-includes).

    A pattern that matches a parent directory applies to everything below it.

    >>> dockerignore_excludes("a/b.py", ["*", "!a"])
    False
    >>> dockerignore_excludes(".venv/bin/python", ["*", "!a"])
    True
    """
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            excluded = not negate
    return excluded


def gpu_count(value: Any) -> float:
    return float(str(value))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def pod_specs(cluster_spec: dict) -> dict[str, dict]:
    """{group: pod spec} of a RayCluster spec: "head" and each worker group's name."""
    pods = {"head": cluster_spec["headGroupSpec"]["template"]["spec"]}
    for group in cluster_spec["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def ray_container(pod: dict) -> dict:
    """KubeRay runs Ray in the pod's first container."""
    return pod["containers"][0]


def limits(container: dict) -> dict:
    return (container.get("resources") or {}).get("limits") or {}


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def flow_function() -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The module-level function FLOW_NAME in flows/nightly.py (None while there is no file)."""
    if not NIGHTLY.exists():
        return None
    tree = ast.parse(NIGHTLY.read_text(), filename=str(NIGHTLY))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == FLOW_NAME:
            return node
    raise AssertionError(f"{NIGHTLY} defines no function {FLOW_NAME!r} (the entrypoint)")


# ---------------------------------------------------------------- every YAML file

@pytest.mark.parametrize("path", DEPLOY_YAMLS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_yaml_parses_to_mappings(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(d, dict) for d in documents), path


def test_the_expected_deploy_files_exist() -> None:
    expected = ["README.md", "CLUSTER.md", "docker/Dockerfile", "docker/README.md",
                "k8s/raycluster.yaml", "k8s/rayjob.yaml", "k8s/pvc.yaml", "k8s/README.md",
                "ray/cluster.yaml", "ray/README.md", "prefect/prefect.yaml", "prefect/README.md"]
    assert [f for f in expected if not (DEPLOY / f).is_file()] == []


# ---------------------------------------------------------------- Dockerfile

@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def docker_args(dockerfile) -> dict[str, str]:
    return build_args(dockerfile)


def _runs(dockerfile: list[Instruction], args: dict[str, str]) -> list[str]:
    return [substitute(i.args, args) for i in dockerfile if i.keyword == "RUN"]


def test_base_image_is_a_cuda_runtime_image(dockerfile, docker_args) -> None:
    froms = [substitute(i.args, docker_args) for i in dockerfile if i.keyword == "FROM"]
    assert len(froms) == 1, froms
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d\d\.\d\d", froms[0]), \
        froms[0]


def test_torch_cuda_tag_matches_the_base_cuda_version(dockerfile, docker_args) -> None:
    base = substitute(next(i.args for i in dockerfile if i.keyword == "FROM"), docker_args)
    major, minor = re.search(r":(\d+)\.(\d+)\.", base).groups()
    assert docker_args["TORCH_CUDA"] == f"cu{major}{minor}", (base, docker_args["TORCH_CUDA"])


def test_image_installs_the_lock_with_only_torch_swapped_for_its_cuda_build(
        dockerfile, docker_args) -> None:
    runs = _runs(dockerfile, docker_args)
    lock_run = next(r for r in runs if "requirements.lock" in r and "sed" in r)
    lock = (ROOT / "requirements.lock").read_text()
    rewritten = apply_sed(sed_expression(lock_run), lock)
    changed = [(a, b) for a, b in zip(lock.splitlines(), rewritten.splitlines()) if a != b]
    torch = lock_pins()["torch"]
    assert torch.endswith("+cpu"), torch
    cuda_torch = torch.replace("+cpu", "+" + docker_args["TORCH_CUDA"])
    assert changed == [(f"torch=={torch}", f"torch=={cuda_torch}")]
    assert len(rewritten.splitlines()) == len(lock.splitlines())
    installs = [a for a in pip_installs(lock_run) if "-r" in a]
    assert installs, lock_run
    index = f"https://download.pytorch.org/whl/{docker_args['TORCH_CUDA']}"
    assert index in installs[0] and "--index-url" not in installs[0], installs[0]


def test_image_installs_segpipe_without_deps_after_the_lock(dockerfile, docker_args) -> None:
    runs = _runs(dockerfile, docker_args)
    lock_at = next(i for i, r in enumerate(runs) if "requirements" in r and "-r" in r)
    pkg_at = next(i for i, r in enumerate(runs)
                  if any(a[-1:] == ["."] and "--no-deps" in a for a in pip_installs(r)))
    assert lock_at < pkg_at


def test_image_python_satisfies_requires_python(dockerfile, docker_args) -> None:
    from packaging.specifiers import SpecifierSet

    version = docker_args["PYTHON_VERSION"]
    assert version in SpecifierSet(pyproject()["project"]["requires-python"])
    runs = " ".join(_runs(dockerfile, docker_args))
    assert f"python{version} -m venv" in runs


def test_entrypoint_is_the_segpipe_console_script(dockerfile) -> None:
    entry = [i.args for i in dockerfile if i.keyword == "ENTRYPOINT"]
    assert len(entry) == 1
    argv = json.loads(entry[0])  # exec form: no shell between docker and segpipe
    assert argv == ["segpipe"]
    assert argv[0] in pyproject()["project"]["scripts"]


def test_image_env_and_non_root_user(dockerfile) -> None:
    env = env_values(dockerfile)
    assert env.get("RAY_USAGE_STATS_ENABLED") == "0" and env.get("DO_NOT_TRACK") == "1"
    users = [i.args for i in dockerfile if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), users


def test_build_context_holds_what_the_image_copies_and_nothing_heavy(dockerfile) -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    copied = [src for i in dockerfile if i.keyword == "COPY" and "--from" not in i.args
              for src in shlex.split(i.args)[:-1]]
    found = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.rstrip("*") for p in found]
    needed = {*copied, *packages, "pyproject.toml", pyproject()["project"]["readme"],
              "pipeline/models/demo-satellite/model.yaml", "flows/nightly.py"}
    assert [p for p in sorted(needed) if dockerignore_excludes(p, patterns)] == []
    assert set(packages) <= {PurePosixPath(c).parts[0] for c in copied}
    heavy = [".venv/bin/python", ".bench/x", "demo-out/inputs/scene.tif", "tests/data/a.tif",
             ".git/HEAD", "flows/__pycache__/cli.cpython-311.pyc"]
    assert [p for p in heavy if not dockerignore_excludes(p, patterns)] == []


# ---------------------------------------------------------------- KubeRay

@pytest.fixture(scope="module")
def raycluster() -> dict:
    return load_yaml(DEPLOY / "k8s" / "raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return load_yaml(DEPLOY / "k8s" / "rayjob.yaml")


@pytest.fixture(scope="module")
def pvc() -> dict:
    return load_yaml(DEPLOY / "k8s" / "pvc.yaml")


@pytest.fixture(scope="module")
def cluster_specs(raycluster, rayjob) -> dict[str, dict]:
    return {"RayCluster": raycluster["spec"], "RayJob": rayjob["spec"]["rayClusterSpec"]}


def test_kuberay_kinds_and_api_version(raycluster, rayjob, pvc) -> None:
    assert (raycluster["apiVersion"], raycluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")


def test_rayjob_cluster_is_the_raycluster(raycluster, rayjob) -> None:
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"]


def test_ray_version_is_the_locked_ray(cluster_specs) -> None:
    for spec in cluster_specs.values():
        assert spec["rayVersion"] == lock_pins()["ray"]


def test_one_image_for_every_pod_tagged_with_the_project_version(cluster_specs, rayjob) -> None:
    images = {ray_container(pod)["image"] for spec in cluster_specs.values()
              for pod in pod_specs(spec).values()}
    submitter = rayjob["spec"].get("submitterPodTemplate")
    if submitter:
        images.add(ray_container(submitter["spec"])["image"])
    assert len(images) == 1, images
    assert images.pop().rsplit(":", 1)[1] == pyproject()["project"]["version"]


def test_head_has_no_gpu_and_workers_request_what_ray_advertises(cluster_specs) -> None:
    for spec in cluster_specs.values():
        head = spec["headGroupSpec"]
        assert "nvidia.com/gpu" not in limits(ray_container(head["template"]["spec"]))
        assert gpu_count(head["rayStartParams"].get("num-gpus", 0)) == 0
        assert spec["workerGroupSpecs"]
        for group in spec["workerGroupSpecs"]:
            params = group["rayStartParams"]
            assert all(isinstance(v, str) for v in params.values()), params  # KubeRay: strings
            container = ray_container(group["template"]["spec"])
            gpus = gpu_count(limits(container).get("nvidia.com/gpu", 0))
            assert gpus >= 1, group["groupName"]
            assert gpu_count(params["num-gpus"]) == gpus, group["groupName"]


def test_shared_volume_is_the_rwx_claim_at_one_path_on_every_pod(cluster_specs, pvc) -> None:
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = pvc["metadata"]["name"]
    for spec in cluster_specs.values():
        paths = set()
        for name, pod in pod_specs(spec).items():
            volumes = {v["name"] for v in pod["volumes"]
                       if (v.get("persistentVolumeClaim") or {}).get("claimName") == claim}
            assert len(volumes) == 1, name
            mounts = [m["mountPath"] for m in ray_container(pod)["volumeMounts"]
                      if m["name"] in volumes]
            assert len(mounts) == 1, name
            paths.add(mounts[0])
        assert paths == {"/shared"}


def test_ray_auth_mode_is_the_same_on_every_pod(cluster_specs, rayjob) -> None:
    """KubeRay's token auth (``authOptions``) sets the mode on every Ray container and the
    submitter; a container that set RAY_AUTH_MODE itself would differ from the rest."""
    containers = [ray_container(pod) for spec in cluster_specs.values()
                  for pod in pod_specs(spec).values()]
    submitter = rayjob["spec"].get("submitterPodTemplate")
    if submitter:
        containers.append(ray_container(submitter["spec"]))
    for name, spec in cluster_specs.items():
        assert spec.get("authOptions") == {"mode": "token"}, name
    assert [env_of(c)["RAY_AUTH_MODE"] for c in containers if "RAY_AUTH_MODE" in env_of(c)] == []


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def test_kuberay_dashboards_are_on_loopback_or_behind_token_auth(cluster_specs) -> None:
    for name, spec in cluster_specs.items():
        params = spec["headGroupSpec"]["rayStartParams"]
        host = params.get("dashboard-host", "127.0.0.1")  # Ray's default: loopback
        token = (spec.get("authOptions") or {}).get("mode") == "token"
        assert host in LOOPBACK_HOSTS or token, f"{name}: dashboard on {host} without a token"
        assert params.get("include-dashboard") != "false" or host in LOOPBACK_HOSTS


def test_rayjob_entrypoint_is_a_segpipe_run_the_cli_accepts(rayjob, cluster_specs) -> None:
    from typer.main import get_command

    from flows.cli import app

    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[0] in pyproject()["project"]["scripts"] and argv[1] == "run", argv
    run = get_command(app).commands["run"]
    known = {opt for p in run.params for opt in (*p.opts, *p.secondary_opts)}
    given = [a.split("=", 1)[0] for a in argv[2:] if a.startswith("-")]
    assert [a for a in given if a not in known] == [], sorted(known)
    ctx = run.make_context("run", argv[2:])  # click parses and converts; nothing runs
    shared = PurePosixPath("/shared")
    out = PurePosixPath(str(ctx.params["out"]))
    assert out.is_absolute() and out.is_relative_to(shared), out
    assert all(PurePosixPath(i).is_relative_to(shared) for i in ctx.params["inputs"])
    assert ctx.params["ray_address"] == "auto"
    assert (ROOT / "pipeline" / "models" / ctx.params["model"] / "model.yaml").is_file()
    worker_gpus = {gpu_count(g["rayStartParams"]["num-gpus"])
                   for g in cluster_specs["RayJob"]["workerGroupSpecs"]}
    assert ctx.params["gpus_per_worker"] > 0
    assert all(g % ctx.params["gpus_per_worker"] == 0 for g in worker_gpus)


# ---------------------------------------------------------------- Ray cluster launcher

@pytest.fixture(scope="module")
def launcher() -> dict:
    return load_yaml(DEPLOY / "ray" / "cluster.yaml")


def test_launcher_config_matches_rays_schema(launcher) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    spec = find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray is not installed")
    schema_file = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json"
    jsonschema.validate(launcher, json.loads(schema_file.read_text()))


def test_launcher_has_a_cpu_head_and_a_gpu_worker_type(launcher) -> None:
    types = launcher["available_node_types"]
    head = launcher["head_node_type"]
    assert head in types and types[head]["resources"].get("GPU", 0) == 0
    workers = {n: t for n, t in types.items() if n != head}
    assert any(t["resources"].get("GPU", 0) >= 1 and t.get("max_workers", 0) > 0
               for t in workers.values()), workers


def test_launcher_installs_the_lock_and_the_synced_checkout(launcher) -> None:
    remote_repo = next(r for r, local in launcher["file_mounts"].items() if local in (".", "./"))
    setup = launcher["setup_commands"]
    lock_cmd = next(c for c in setup if "requirements.lock" in c)
    assert f"{remote_repo}/requirements.lock" in lock_cmd
    installs = [a for c in setup for a in pip_installs(c)]
    assert any("-r" in a for a in installs)
    assert any("--no-deps" in a and a[-1].rstrip("/") == remote_repo for a in installs), installs
    # the torch swap is the Dockerfile's rule, with the same CUDA build
    lock = (ROOT / "requirements.lock").read_text()
    docker = parse_dockerfile(DOCKERFILE.read_text())
    docker_args = build_args(docker)
    docker_sed = sed_expression(next(r for r in _runs(docker, docker_args) if "sed" in r))
    assert apply_sed(sed_expression(lock_cmd), lock) == apply_sed(docker_sed, lock)
    assert f"download.pytorch.org/whl/{docker_args['TORCH_CUDA']}" in lock_cmd
    assert any("python3.11 -m venv" in c for c in setup)
    assert "/shared" in " ".join(setup)


def test_launcher_dashboard_is_on_loopback_without_auth(launcher) -> None:
    """With auth disabled, the head's dashboard (job submission) must not face the network:
    loopback only, reached through `ray dashboard` (an SSH port-forward)."""
    head = " ".join(launcher["head_start_ray_commands"])
    modes = set(re.findall(r"RAY_AUTH_MODE=(\w+)", head))
    hosts = re.findall(r"--dashboard-host[= ](\S+)", head)
    dashboard = "--include-dashboard=false" not in head
    if dashboard and modes != {"token"}:
        assert hosts and set(hosts) <= LOOPBACK_HOSTS, hosts
    assert "0.0.0.0" not in head and "--dashboard-host=::" not in head
    readme = (DEPLOY / "ray" / "README.md").read_text()
    assert "ray dashboard deploy/ray/cluster.yaml" in readme


def test_cluster_guide_keeps_the_dashboard_on_loopback() -> None:
    guide = (DEPLOY / "CLUSTER.md").read_text()
    starts = [line for line in guide.splitlines() if "ray start --head" in line]
    assert starts and all("0.0.0.0" not in line for line in starts)
    assert "ssh -L 8265:127.0.0.1:8265" in guide


def test_launcher_starts_ray_with_one_auth_mode(launcher) -> None:
    head = " ".join(launcher["head_start_ray_commands"])
    worker = " ".join(launcher["worker_start_ray_commands"])
    assert "ray start --head" in head and "ray start --address=" in worker
    modes = set(re.findall(r"RAY_AUTH_MODE=(\w+)", head + " " + worker + " "
                           + " ".join(launcher["setup_commands"])))
    assert len(modes) == 1, modes


# ---------------------------------------------------------------- Prefect

@pytest.fixture(scope="module")
def prefect_file() -> dict:
    return load_yaml(DEPLOY / "prefect" / "prefect.yaml")


@pytest.fixture(scope="module")
def deployment(prefect_file) -> dict:
    names = [d["name"] for d in prefect_file["deployments"]]
    assert names == [DEPLOYMENT_NAME]
    return prefect_file["deployments"][0]


def test_prefect_file_loads_with_prefects_own_model(prefect_file) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_file)
    assert model.pull, "a pull step tells the worker where flows/nightly.py is"


def test_deployment_matches_flows_schedule(deployment) -> None:
    assert deployment["entrypoint"] == ENTRYPOINT
    assert deployment["schedules"] == [{"cron": DEFAULT_CRON, "timezone": DEFAULT_TIMEZONE,
                                        "active": True}]
    assert deployment["work_pool"]["name"] == WORK_POOL


def test_entrypoint_file_defines_the_flow() -> None:
    function = flow_function()
    if function is None:
        pytest.skip("flows/nightly.py is not there yet")
    decorators = [d.func if isinstance(d, ast.Call) else d for d in function.decorator_list]
    names = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", None) for d in decorators}
    assert "flow" in names, f"{FLOW_NAME} is not a Prefect @flow"


def test_deployment_parameters_are_the_flows_parameters(deployment) -> None:
    function = flow_function()
    if function is None:
        pytest.skip("flows/nightly.py is not there yet")
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    required = {a.arg for a in positional[:len(positional) - len(args.defaults)]}
    required |= {a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None}
    accepted = {a.arg for a in (*positional, *args.kwonlyargs)}
    given = set(deployment["parameters"])
    assert given <= accepted, given - accepted
    assert required <= given, required - given
    assert {"inbox", "out", "model"} <= given


def test_deployment_options_are_run_options(deployment) -> None:
    options = deployment["parameters"].get("options")
    if options:
        from pipeline.options import RunOptions

        RunOptions(**options)


def test_prefect_readme_names_the_same_pool_and_deployment() -> None:
    text = (DEPLOY / "prefect" / "README.md").read_text()
    pools = set(re.findall(r"(?:work-pool create|--pool)\s+([\w.-]+)", text))
    assert pools == {WORK_POOL}, pools
    assert DEPLOYMENT_NAME in text and "--prefect-file deploy/prefect/prefect.yaml" in text
