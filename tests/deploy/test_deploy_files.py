"""Checks of everything in deploy/ that can be checked without Docker, a cluster or a GPU.

Each test reads the files as the tool that consumes them would (YAML, Dockerfile
instructions, systemd unit sections) and asserts the properties a deployment depends on:
GPU requests, gRPC health probes on the port the Service targets, read-only model mounts,
stop timeouts that cover the server's drain grace period, HTTP/2 upstreams in Envoy, and a
container build that runs the project's own scripts/install-deps.sh.

Run: /usr/bin/python3 -m pytest -q tests/deploy
"""

import os
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")
GRPC_PORT = 50051
# The server's default drain grace period when config/server.yaml does not say otherwise.
DEFAULT_DRAIN_GRACE_S = 30


def read(relative):
    with open(os.path.join(REPO, relative), encoding="utf-8") as f:
        return f.read()


def load_all(relative):
    return [doc for doc in yaml.safe_load_all(read(relative)) if doc is not None]


def find_key(tree, predicate):
    """Yields (key, value) for every mapping key in a nested YAML tree that matches."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if predicate(str(key)):
                yield key, value
            yield from find_key(value, predicate)
    elif isinstance(tree, list):
        for item in tree:
            yield from find_key(item, predicate)


def drain_grace_seconds():
    """The drain grace period from config/server.yaml (any key mentioning 'drain' with a
    number of seconds), else the documented default."""
    path = os.path.join(REPO, "config", "server.yaml")
    if not os.path.exists(path):
        return DEFAULT_DRAIN_GRACE_S
    config = yaml.safe_load(read("config/server.yaml")) or {}
    for _, value in find_key(config, lambda k: "drain" in k.lower()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d+s?", value):
            return int(value.rstrip("s"))
    return DEFAULT_DRAIN_GRACE_S


def seconds(value):
    """Parses '35s', '1m30s', '35' or 35 into seconds."""
    if isinstance(value, (int, float)):
        return value
    total = 0
    for number, unit in re.findall(r"(\d+)\s*(h|m|s|ms)?", str(value)):
        total += int(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "": 1}[unit]
    return total


# ---------------------------------------------------------------- every YAML file


def yaml_files():
    found = []
    for root, _, files in os.walk(DEPLOY):
        for name in files:
            if name.endswith((".yaml", ".yml")):
                found.append(os.path.relpath(os.path.join(root, name), REPO))
    return sorted(found)


def test_deploy_has_the_expected_yaml_files():
    files = set(yaml_files())
    for expected in ["deploy/compose.yaml", "deploy/envoy/envoy.yaml",
                     "deploy/k8s/attnscope.yaml", "deploy/k8s/envoy.yaml"]:
        assert expected in files, f"{expected} is missing (found {sorted(files)})"


@pytest.mark.parametrize("relative", yaml_files())
def test_yaml_parses_to_mappings(relative):
    docs = load_all(relative)
    assert docs, f"{relative} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{relative}: a document is {type(doc).__name__}, not a mapping"


# ---------------------------------------------------------------- Kubernetes


def k8s_objects():
    objects = []
    for relative in yaml_files():
        if relative.startswith("deploy/k8s/"):
            for doc in load_all(relative):
                objects.append((relative, doc))
    return objects


def k8s_by_kind(kind, name=None):
    return [doc for _, doc in k8s_objects()
            if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)]


def the_one(kind, name):
    found = k8s_by_kind(kind, name)
    assert len(found) == 1, f"want exactly one {kind} named {name}, found {len(found)}"
    return found[0]


def server_container():
    deployment = the_one("Deployment", "attnscope")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return deployment, containers[0]


def test_k8s_objects_have_api_version_kind_and_name():
    objects = k8s_objects()
    assert objects
    for relative, doc in objects:
        for field in ("apiVersion", "kind", "metadata"):
            assert field in doc, f"{relative}: object without {field}: {doc}"
        assert doc["metadata"].get("name"), f"{relative}: {doc['kind']} without a name"
    kinds = {doc["kind"] for _, doc in objects}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds, kinds


def test_k8s_deployment_requests_one_gpu():
    _, container = server_container()
    resources = container["resources"]
    # Extended resources must be in limits; if also requested, the two must be equal.
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    if "nvidia.com/gpu" in resources.get("requests", {}):
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]


def container_port_number(container, port):
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return entry["containerPort"]
    raise AssertionError(f"named port {port!r} is not declared by container {container['name']}")


def test_k8s_probes_use_grpc_health_on_the_port_the_service_targets():
    deployment, container = server_container()
    service = the_one("Service", "attnscope")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for key, value in service["spec"]["selector"].items():
        assert pod_labels.get(key) == value, f"Service selector {key}={value} misses the pods"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service_ports = service["spec"]["ports"]
    assert len(service_ports) == 1
    target = container_port_number(container, service_ports[0].get("targetPort", service_ports[0]["port"]))
    assert target == GRPC_PORT
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe in container, f"server container has no {probe}"
        grpc = container[probe].get("grpc")
        assert grpc is not None, f"{probe} is not a grpc: probe (grpc.health.v1)"
        assert container_port_number(container, grpc["port"]) == target, \
            f"{probe} checks port {grpc['port']} but the Service targets {target}"
    # Loading a model takes minutes: without a startup probe liveness would kill the pod.
    startup = container.get("startupProbe", {})
    assert "grpc" in startup
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_k8s_mounts_models_read_only_config_map_and_api_key_secret():
    deployment, container = server_container()
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for mount in mounts.values():
        assert mount["name"] in volumes, f"mount of undeclared volume {mount['name']}"
    models = mounts["/models"]
    assert models.get("readOnly") is True
    assert volumes[models["name"]].get("persistentVolumeClaim", {}).get("readOnly") is True

    config_map = the_one("ConfigMap", "attnscope-config")
    config = yaml.safe_load(config_map["data"]["server.yaml"])
    assert isinstance(config, dict)
    config_volumes = [v for v in volumes.values()
                      if v.get("configMap", {}).get("name") == "attnscope-config"]
    assert config_volumes, "the ConfigMap with server.yaml is not mounted"
    secret_volumes = [v for v in volumes.values() if "secret" in v]
    assert secret_volumes, "no Secret volume for the API keys"
    # The server config names the key file inside the Secret's mount.
    secret_mount = next(m for m in mounts.values() if m["name"] == secret_volumes[0]["name"])
    key_files = [v for _, v in find_key(config, lambda k: "api_key" in k.lower())
                 if isinstance(v, str)]
    assert key_files, "server.yaml in the ConfigMap sets no API key file"
    assert key_files[0].startswith(secret_mount["mountPath"].rstrip("/") + "/")
    # The container's arguments point at the mounted config file.
    args = container.get("args", [])
    assert "--config" in args
    assert args[args.index("--config") + 1] in mounts


def test_k8s_config_map_uses_only_keys_the_server_config_documents():
    path = os.path.join(REPO, "config", "server.yaml")
    if not os.path.exists(path):
        pytest.skip("config/server.yaml not written yet")
    documented = yaml.safe_load(read("config/server.yaml")) or {}
    config = yaml.safe_load(the_one("ConfigMap", "attnscope-config")["data"]["server.yaml"])

    def check(ours, theirs, where):
        for key, value in ours.items():
            assert key in theirs, f"ConfigMap server.yaml key {where}{key} is not in config/server.yaml"
            if isinstance(value, dict) and isinstance(theirs[key], dict):
                check(value, theirs[key], f"{where}{key}.")

    check(config, documented, "")


def test_k8s_termination_grace_covers_the_drain_period():
    deployment, _ = server_container()
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain_grace_seconds()


def test_k8s_server_runs_as_non_root():
    deployment, container = server_container()
    pod_security = deployment["spec"]["template"]["spec"].get("securityContext", {})
    assert pod_security.get("runAsNonRoot") is True
    assert pod_security.get("runAsUser", 0) != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_k8s_envoy_mounts_its_config_and_tls_secret():
    deployment = the_one("Deployment", "attnscope-envoy")
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    container = spec["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert volumes[mounts["/etc/envoy/envoy.yaml"]["name"]]["configMap"]["name"] == "attnscope-envoy"
    assert "secret" in volumes[mounts["/etc/envoy/tls"]["name"]]
    listener_port = envoy_config()["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    service = the_one("Service", "attnscope-envoy")
    target = container_port_number(container, service["spec"]["ports"][0]["targetPort"])
    assert target == listener_port


# ---------------------------------------------------------------- Envoy


def envoy_config():
    docs = load_all("deploy/envoy/envoy.yaml")
    assert len(docs) == 1
    return docs[0]


def test_envoy_clusters_speak_http2_with_grpc_health_checks():
    clusters = envoy_config()["static_resources"]["clusters"]
    assert clusters
    for cluster in clusters:
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in options["explicit_http_config"], \
            f"cluster {cluster['name']} does not use HTTP/2 upstream (gRPC needs it)"
        assert any("grpc_health_check" in check for check in cluster.get("health_checks", []))
        assert cluster["lb_policy"] in ("LEAST_REQUEST", "ROUND_ROBIN", "RANDOM")


def test_envoy_upstream_is_the_k8s_service_port():
    service = the_one("Service", "attnscope")
    assert service["spec"].get("clusterIP") == "None", \
        "Envoy needs a headless Service to see every replica"
    endpoints = [lb["endpoint"]["address"]["socket_address"]
                 for cluster in envoy_config()["static_resources"]["clusters"]
                 for group in cluster["load_assignment"]["endpoints"]
                 for lb in group["lb_endpoints"]]
    assert endpoints
    for address in endpoints:
        assert address["address"].split(".")[0] == service["metadata"]["name"]
        assert address["port_value"] == service["spec"]["ports"][0]["port"]


def test_envoy_terminates_tls_routes_to_known_clusters_without_stream_timeouts():
    config = envoy_config()
    cluster_names = {c["name"] for c in config["static_resources"]["clusters"]}
    listeners = config["static_resources"]["listeners"]
    assert listeners
    for listener in listeners:
        for chain in listener["filter_chains"]:
            tls = chain["transport_socket"]
            assert tls["name"] == "envoy.transport_sockets.tls"
            context = tls["typed_config"]["common_tls_context"]
            assert "h2" in context["alpn_protocols"]
            assert context["tls_certificates"]
            managers = [f["typed_config"] for f in chain["filters"]
                        if f["name"] == "envoy.filters.network.http_connection_manager"]
            assert len(managers) == 1
            manager = managers[0]
            assert manager["codec_type"] in ("HTTP2", "AUTO")
            # Long captures: a finite overall route timeout would cut streams off.
            for host in manager["route_config"]["virtual_hosts"]:
                for route in host["routes"]:
                    assert route["route"]["cluster"] in cluster_names
                    assert seconds(route["route"].get("timeout", "15s")) == 0, \
                        "route timeout must be 0s (disabled) for long streams"
            assert seconds(manager["stream_idle_timeout"]) >= 300


# ---------------------------------------------------------------- compose


def compose_service():
    compose = load_all("deploy/compose.yaml")[0]
    return compose, compose["services"]["attnscope"]


def test_compose_reserves_a_gpu_and_mounts_models_read_only():
    compose, service = compose_service()
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    models = [v for v in service["volumes"] if isinstance(v, dict) and v["target"] == "/models"]
    assert len(models) == 1 and models[0]["read_only"] is True
    config = [v for v in service["volumes"]
              if isinstance(v, dict) and v["target"] == "/etc/attnscope/server.yaml"]
    assert len(config) == 1 and config[0]["read_only"] is True
    for secret in service["secrets"]:
        name = secret["source"] if isinstance(secret, dict) else secret
        assert name in compose["secrets"], f"secret {name} is not defined"
        assert "file" in compose["secrets"][name]
    assert "--config" in service["command"]
    assert service["command"][service["command"].index("--config") + 1] == "/etc/attnscope/server.yaml"
    # The build context is the repository root and the recipe is deploy/Dockerfile.
    context = os.path.normpath(os.path.join(DEPLOY, service["build"]["context"]))
    assert context == REPO
    assert os.path.exists(os.path.join(context, service["build"]["dockerfile"]))


def test_compose_health_check_probes_grpc_health_on_the_served_port():
    _, service = compose_service()
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    command = " ".join(test[1:])
    assert "grpc_health_probe" in command
    assert f":{GRPC_PORT}" in command
    assert any(str(port).endswith(f":{GRPC_PORT}") for port in service["ports"])
    listen = service["command"][service["command"].index("--listen") + 1]
    assert listen.endswith(f":{GRPC_PORT}")
    assert seconds(service["healthcheck"]["start_period"]) >= 120


def container_config():
    return yaml.safe_load(read("deploy/container/server.yaml"))


def test_compose_stop_grace_covers_the_drain_period():
    _, service = compose_service()
    assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
    grace = container_config().get("drain_grace_seconds", DEFAULT_DRAIN_GRACE_S)
    assert seconds(service["stop_grace_period"]) > grace


def test_compose_mounts_the_container_config_and_the_key_file_it_names():
    _, service = compose_service()
    config_mount = next(v for v in service["volumes"]
                        if isinstance(v, dict) and v["target"] == "/etc/attnscope/server.yaml")
    default_source = re.fullmatch(r"\$\{\w+:-(.+)\}", config_mount["source"]).group(1)
    assert os.path.normpath(os.path.join(DEPLOY, default_source)) == \
        os.path.join(DEPLOY, "container", "server.yaml")
    config = container_config()
    secret = service["secrets"][0]
    secret_path = "/run/secrets/" + (secret.get("target", secret["source"])
                                     if isinstance(secret, dict) else secret)
    assert config["auth"]["api_keys_file"] == secret_path
    assert config["listen"].endswith(f":{GRPC_PORT}") and config["listen"].startswith("0.0.0.0")
    assert config["device"].startswith("cuda")


def test_dockerfile_bakes_in_the_container_config():
    copies = [args for instruction, args in stages()[-1] if instruction == "COPY"]
    assert "deploy/container/server.yaml /etc/attnscope/server.yaml" in copies


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions():
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = read("deploy/Dockerfile")
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    return [(entry.split(None, 1)[0].upper(), entry.split(None, 1)[1] if " " in entry else "")
            for entry in logical]


def stages():
    result = []
    for instruction, args in dockerfile_instructions():
        if instruction == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction, args))
    return result


def test_dockerfile_is_multi_stage_on_cuda_images():
    all_stages = stages()
    assert len(all_stages) >= 2
    bases = [args.split()[0] for stage in all_stages for instruction, args in stage
             if instruction == "FROM"]
    for base in bases:
        assert base.startswith("nvidia/cuda:"), base
    assert "devel" in bases[0] and "runtime" in bases[-1]


def test_dockerfile_installs_with_the_project_script_and_official_libtorch():
    runs = " ".join(args for instruction, args in dockerfile_instructions() if instruction == "RUN")
    assert re.search(r"ATTNSCOPE_SKIP_TORCH=1 bash scripts/install-deps\.sh", runs)
    args = {m.group(1): m.group(2) for m in
            (re.match(r"(\w+)=(.*)", a) for i, a in dockerfile_instructions() if i == "ARG") if m}
    assert args["LIBTORCH_VERSION"].startswith("2.")
    assert "cxx11-abi" in args["LIBTORCH_URL"] and "download.pytorch.org/libtorch/" in args["LIBTORCH_URL"]
    assert "-DCMAKE_PREFIX_PATH=/opt/libtorch" in runs
    assert "-DATTNSCOPE_BUILD_TESTS=OFF" in runs


def test_dockerfile_copies_only_paths_that_exist():
    for instruction, args in dockerfile_instructions():
        if instruction != "COPY" or "--from=" in args:
            continue
        sources = args.split()[:-1]
        for source in sources:
            if source == ".":
                continue
            assert os.path.exists(os.path.join(REPO, source)), f"COPY {source}: no such path"
    # Scripts the build runs from the copied tree.
    for script in re.findall(r"/src/(\S+\.sh)", " ".join(a for _, a in dockerfile_instructions())):
        assert os.access(os.path.join(REPO, script), os.X_OK), f"{script} is not executable"


def test_dockerfile_runtime_stage_is_non_root_with_grpc_health_check():
    final = stages()[-1]
    users = [args for instruction, args in final if instruction == "USER"]
    assert users, "runtime stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    health = [args for instruction, args in final if instruction == "HEALTHCHECK"]
    assert len(health) == 1 and "grpc_health_probe" in health[0] and f":{GRPC_PORT}" in health[0]
    exposed = " ".join(args for instruction, args in final if instruction == "EXPOSE")
    assert str(GRPC_PORT) in exposed.split()
    volumes = " ".join(args for instruction, args in final if instruction == "VOLUME")
    assert "/models" in volumes
    entry = " ".join(args for instruction, args in final if instruction in ("CMD", "ENTRYPOINT"))
    assert "attnscope-server" in entry and "/models" in entry and f"0.0.0.0:{GRPC_PORT}" in entry


def install_script_packages(env_extra):
    env = dict(os.environ, ATTNSCOPE_PRINT_PACKAGES="1", **env_extra)
    out = subprocess.run(["bash", os.path.join(REPO, "scripts", "install-deps.sh")], env=env,
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return out.split()


def test_install_script_skip_torch_drops_only_debian_torch_and_chromium():
    full = install_script_packages({})
    skipped = install_script_packages({"ATTNSCOPE_SKIP_TORCH": "1"})
    assert "libtorch-dev" in full
    # chromium only drives the viewer's browser test, which the container build does not run.
    assert set(full) - set(skipped) == {"libtorch-dev", "python3-torch", "chromium"}
    assert "libgrpc++-dev" in skipped and "clang" in skipped


def test_collect_runtime_libs_copies_distro_libraries_but_not_libc():
    binary = shutil.which("protoc") or shutil.which("curl") or "/bin/ls"
    with tempfile.TemporaryDirectory() as dest:
        subprocess.run([os.path.join(DEPLOY, "collect-runtime-libs.sh"), dest, binary],
                       check=True, capture_output=True, timeout=60)
        copied = os.listdir(dest)
        wanted = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        assert not any(name.startswith(("libc.so", "ld-linux", "libstdc++")) for name in copied)
        for name in copied:
            assert name in wanted, f"{name} copied but not loaded by {binary}"


# ---------------------------------------------------------------- systemd


def unit_sections(relative):
    """Sections of a systemd unit as {section: [(key, value), ...]} (keys may repeat)."""
    sections, current = {}, None
    for line in read(relative).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def unit_value(section, key):
    values = [v for k, v in section if k == key]
    assert values, f"missing {key}="
    return values[-1]


def test_systemd_unit_runs_the_server_with_config_and_environment():
    sections = unit_sections("deploy/systemd/attnscope.service")
    assert {"Unit", "Service", "Install"} <= sections.keys()
    service = sections["Service"]
    exec_start = unit_value(service, "ExecStart")
    assert exec_start.split()[0].startswith("/") and exec_start.split()[0].endswith("attnscope-server")
    assert "--config" in exec_start.split()
    environment_file = unit_value(service, "EnvironmentFile").lstrip("-")
    assert environment_file.startswith("/etc/")
    # Every ${VAR} ExecStart uses is set by the shipped environment file.
    env_text = read("deploy/systemd/attnscope.env")
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", env_text, re.M))
    for variable in re.findall(r"\$\{(\w+)\}", exec_start):
        assert variable in defined, f"ExecStart uses ${{{variable}}} but attnscope.env does not set it"
    assert unit_value(service, "User") not in ("root", "0")
    assert unit_value(sections["Install"], "WantedBy") == "multi-user.target"


def test_systemd_unit_restarts_and_stops_after_the_drain_period():
    service = unit_sections("deploy/systemd/attnscope.service")["Service"]
    assert unit_value(service, "Restart") in ("on-failure", "always")
    assert seconds(unit_value(service, "RestartSec")) > 0
    assert unit_value(service, "KillSignal") == "SIGTERM"
    stop = seconds(unit_value(service, "TimeoutStopSec"))
    grace = drain_grace_seconds()
    assert grace < stop <= grace + 15, f"TimeoutStopSec {stop}s vs drain grace {grace}s"


def test_systemd_unit_is_hardened_but_keeps_gpu_devices():
    service = dict(unit_sections("deploy/systemd/attnscope.service")["Service"])
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectKernelModules": "yes", "RestrictSUIDSGID": "yes"}.items():
        assert service.get(key) == value, f"{key}={service.get(key)}, want {value}"
    assert service.get("CapabilityBoundingSet", None) == ""
    # /dev/nvidia* must stay reachable.
    assert service.get("PrivateDevices", "no") == "no"
    assert service.get("DevicePolicy", "auto") == "auto"
    # The CUDA driver JIT needs writable+executable memory.
    assert service.get("MemoryDenyWriteExecute", "no") == "no"


def test_systemd_analyze_verifies_the_unit():
    assert shutil.which("systemd-analyze"), "systemd-analyze not found: run scripts/install-deps.sh"
    text = read("deploy/systemd/attnscope.service")
    # verify insists that the binary and environment file exist: point them at stand-ins.
    text = text.replace("/usr/local/bin/attnscope-server", "/bin/true")
    text = re.sub(r"^EnvironmentFile=.*$", "EnvironmentFile=-/nonexistent/attnscope.env", text, flags=re.M)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "attnscope.service")
        with open(path, "w") as f:
            f.write(text)
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", path],
                                capture_output=True, text=True, timeout=60)
        relevant = [line for line in (result.stdout + result.stderr).splitlines()
                    if "attnscope.service" in line]
        assert result.returncode == 0 and not relevant, result.stdout + result.stderr


# ---------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", ["scripts/run-fuzz.sh", "scripts/sanitize-tests.sh",
                                    "deploy/collect-runtime-libs.sh"])
def test_scripts_parse_and_are_executable(script):
    path = os.path.join(REPO, script)
    assert os.access(path, os.X_OK), f"{script} is not executable"
    subprocess.run(["bash", "-n", path], check=True, timeout=30)


def test_run_fuzz_rejects_a_bad_duration_before_building():
    result = subprocess.run([os.path.join(REPO, "scripts", "run-fuzz.sh"), "soon"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "SECONDS_PER_TARGET" in result.stderr and "soon" in result.stderr


# ---------------------------------------------------------------- the server's own parser


@pytest.mark.skipif(not os.environ.get("ATTNSCOPE_CHECK_SERVER_CONFIG"),
                    reason="ATTNSCOPE_CHECK_SERVER_CONFIG not set (set by CTest: the server's "
                           "config parser, built as tests/deploy/check_server_config)")
def test_server_accepts_the_config_map_server_yaml():
    config_map = the_one("ConfigMap", "attnscope-config")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "server.yaml")
        with open(path, "w") as f:
            f.write(config_map["data"]["server.yaml"])
        files = [path, os.path.join(DEPLOY, "container", "server.yaml")]
        if os.path.exists(os.path.join(REPO, "config", "server.yaml")):
            files.append(os.path.join(REPO, "config", "server.yaml"))
        result = subprocess.run([os.environ["ATTNSCOPE_CHECK_SERVER_CONFIG"], *files],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        # And the drain grace the stop timeouts were checked against is the one it reads.
        grace = float(re.search(r"drain_grace_seconds=([\d.]+)", result.stdout).group(1))
        deployment, _ = server_container()
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_server_config_check_rejects_an_unknown_key():
    """The parser check above can fail: a config with a misspelt key is rejected."""
    checker = os.environ.get("ATTNSCOPE_CHECK_SERVER_CONFIG")
    if not checker:
        pytest.skip("ATTNSCOPE_CHECK_SERVER_CONFIG not set")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "server.yaml")
        with open(path, "w") as f:
            f.write("listen: 0.0.0.0:50051\ndrain_grace_secs: 30\n")
        result = subprocess.run([checker, path], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "drain_grace_secs" in result.stdout


# ---------------------------------------------------------------- fuzz corpora


def test_every_fuzz_target_has_a_seed_corpus_in_the_repo():
    fuzz_dir = os.path.join(REPO, "tests", "fuzz")
    targets = sorted(name[:-3] for name in os.listdir(fuzz_dir) if name.endswith("_fuzz.cc"))
    assert "safetensors_header_fuzz" in targets
    for target in targets:
        corpus = os.path.join(fuzz_dir, "corpus", target)
        seeds = os.listdir(corpus) if os.path.isdir(corpus) else []
        assert seeds, (f"tests/fuzz/{target}.cc has no seeds in tests/fuzz/corpus/{target}/ "
                       "(CI fuzzes each target from its checked-in corpus)")
        assert f"attnscope_add_fuzzer({target}" in read("tests/fuzz/CMakeLists.txt"), \
            f"{target} is not registered in tests/fuzz/CMakeLists.txt"
