"""The first process of a pooled sandbox: Jupyter imported ahead, run for its owner when adopted.

A course's warm pool (`visa_spawner.backends.sandbox.pool`) keeps sandboxes started before anyone
owns them: an anonymous account, the materials in its home, the proposal's data mounted. Most of
a sandbox's start is Python importing Jupyter, so this process does that first, then waits on a
channel only the hub holds (one end of a socket pair the hub made and passed in as ``--channel-fd``;
nothing in the sandbox can open it, and it is closed before Jupyter runs). The hub sends one JSON
line when a participant adopts the sandbox, ``{"argv", "env", "cwd"}``: the owner's environment
(their JupyterHub token, user and URLs) and the single-user server's command line. This process then
becomes that server, in-process, with the modules already loaded.

Protocol, one JSON line each way: ``{"ready": true, "seconds", "modules", "failed"}`` from here once
imported, then the start request from the hub. End of file instead (the hub stopped or drained the
pool) ends this process, so a pooled sandbox never outlives the hub that could adopt it.

A command that is not a Python script of this interpreter, or an environment whose import-time
variables differ from this process's own, is exec'd instead: slower, never wrong. Nothing of the
request (a token) is ever printed.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import os
import random
import runpy
import shutil
import socket
import sys
import time

#: what jupyterhub-singleuser imports on every start (enabled server extensions are added)
PRELOAD = ("jupyterhub.singleuser", "jupyterhub.singleuser.extension", "jupyter_server.serverapp",
           "jupyter_client.manager", "ipykernel", "terminado", "jupyterlab")
#: variables installed modules read when imported: a request with other values is exec'd
IMPORT_TIME_ENV = ("JUPYTERHUB_SINGLEUSER_APP", "JUPYTERHUB_SINGLEUSER_EXTENSION", "JUPYTERHUB_METRICS_PREFIX",
                   "JUPYTER_ALLOW_INSECURE_WRITES", "TRAITLETS_APPLICATION_RAISE_CONFIG_FILE_ERROR",
                   "GATEWAY_WS_PING_INTERVAL_SECS")
#: trait defaults that installed classes take from the environment when they are imported, i.e.
#: from the pooled sandbox's, not the owner's: (module, class, trait, variable, fallback). Without
#: this, HubAuth.base_url stays "/" and the owner's login cookie is set for every path.
ENV_DEFAULTS = (
    ("jupyterhub.services.auth", "HubAuth", "base_url", "JUPYTERHUB_SERVICE_PREFIX", "/"),
    ("jupyterhub.services.auth", "HubAuth", "api_url", "JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
    ("jupyterhub.services.auth", "HubAuth", "keyfile", "JUPYTERHUB_SSL_KEYFILE", ""),
    ("jupyterhub.services.auth", "HubAuth", "certfile", "JUPYTERHUB_SSL_CERTFILE", ""),
    ("jupyterhub.services.auth", "HubAuth", "client_ca", "JUPYTERHUB_SSL_CLIENT_CA", ""),
    ("jupyter_client.session", "Session", "username", "USER", "username"),
)
MAX_REQUEST = 1 << 20


def log(message: str) -> None:
    print(f"visa-zygote: {message}", file=sys.stderr, flush=True)


def enabled_extensions(prefix: str) -> list[str]:
    """Server extensions the env enables (its ``jupyter_server_config.d``, merged in name order)."""
    enabled: dict = {}
    for path in sorted(glob.glob(os.path.join(prefix, "etc/jupyter/jupyter_server_config.d/*.json"))):
        try:
            with open(path) as f:
                enabled.update(json.load(f).get("ServerApp", {}).get("jpserver_extensions", {}))
        except (OSError, ValueError, AttributeError, TypeError):
            continue
    return [name for name, on in enabled.items() if on]


def _lazy_handlers(module_name: str) -> str | None:
    """`<module>.handlers` if it exists: where an extension made from Jupyter's extension template
    keeps its request handlers, which its load function often imports only then (jupyterlab_h5web's
    imports h5py and h5grove there: 0.35 s of an adopted server's start, measured)."""
    name = f"{module_name}.handlers"
    try:
        return name if importlib.util.find_spec(name) is not None else None
    except (ImportError, ValueError):
        return None


def preload(prefix: str) -> tuple[list[str], list[str]]:
    """Import Jupyter and each extension with its extension points' modules and their lazily
    imported handlers (`_lazy_handlers`): (loaded, failed)."""
    loaded, failed = [], []
    for name in dict.fromkeys([*PRELOAD, *enabled_extensions(prefix)]):
        try:
            module = importlib.import_module(name)
            points = [p.get("module", name) for p in getattr(module, "_jupyter_server_extension_points", list)()]
            for point in dict.fromkeys(points):
                importlib.import_module(point)
                if handlers := _lazy_handlers(point):
                    importlib.import_module(handlers)
            loaded.append(name)
        except Exception as e:  # a broken extension fails later, in Jupyter, with its own message
            failed.append(f"{name}: {type(e).__name__}")
    return loaded, failed


def _subclasses(cls: type) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def refresh_env_defaults(env: dict[str, str]) -> None:
    """Give the `ENV_DEFAULTS` traits of the loaded classes the values of the owner's `env` (the
    trait's default and each class's cache of static initial values, as traitlets keeps both)."""
    for module, class_name, name, variable, fallback in ENV_DEFAULTS:
        base = getattr(sys.modules.get(module), class_name, None)
        if base is None:
            continue
        value, trait = env.get(variable) or fallback, base.class_traits()[name]
        trait.default_value = value
        for cls in _subclasses(base):
            static = cls.__dict__.get("_static_immutable_initial_values", {})
            if name in static and cls.class_traits().get(name) is trait:
                static[name] = value


def read_request(channel: socket.socket) -> dict | None:
    """The hub's start request, or None when the hub closed the channel (drained, or gone)."""
    data = b""
    while b"\n" not in data:
        chunk = channel.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
    request = json.loads(data.split(b"\n", 1)[0])
    argv, env = request.get("argv"), request.get("env")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
            and isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("a request is argv (strings), env (strings) and cwd")
    return request


def in_process_script(argv0: str, env: dict[str, str], template_env: dict[str, str]) -> str | None:
    """The command's path if this interpreter can run it in-process with the modules it has loaded."""
    if any(env.get(k) != template_env.get(k) for k in IMPORT_TIME_ENV):
        return None
    path = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            shebang = f.readline(256)
    except OSError:
        return None
    words = shebang[2:].split()
    interpreter = words[0].decode(errors="replace") if shebang.startswith(b"#!") and words else ""
    return path if interpreter and os.path.realpath(interpreter) == os.path.realpath(sys.executable) else None


def become(request: dict, template_env: dict[str, str]) -> int:
    """Run the requested server here, as this sandbox's process (returns only its exit code)."""
    argv, env = request["argv"], request["env"]
    os.chdir(request.get("cwd") or env.get("HOME") or "/")
    script = in_process_script(argv[0], env, template_env)
    if not script:
        os.execve(shutil.which(argv[0], path=env.get("PATH", os.defpath)) or argv[0], argv, env)
    os.environ.clear()
    os.environ.update(env)
    refresh_env_defaults(env)
    random.seed()  # nothing drawn before the owner's request is reused after it
    sys.argv = [script, *argv[1:]]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="visa-zygote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--channel-fd", type=int, required=True, help="this end of the hub's socket pair")
    channel = socket.socket(fileno=parser.parse_args(args).channel_fd)
    channel.set_inheritable(False)  # never passed on to Jupyter, its kernels or terminals
    t0 = time.monotonic()
    loaded, failed = preload(sys.prefix)
    template_env = dict(os.environ)
    ready = {"ready": True, "seconds": round(time.monotonic() - t0, 2), "modules": len(loaded), "failed": failed}
    try:
        channel.sendall(json.dumps(ready).encode() + b"\n")
        request = read_request(channel)
    except (OSError, ValueError) as e:
        log(f"no start request: {type(e).__name__}")
        return 2
    finally:
        channel.close()
    if request is None:
        log("the hub closed the pool's channel: ending")
        return 0
    try:
        return become(request, template_env)
    except Exception as e:  # noqa: BLE001 - say what failed, never the request (it holds a token)
        log(f"could not start {os.path.basename(request['argv'][0])}: {type(e).__name__}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
