"""Build the official Kubernetes, etcd and kwok binaries from their Go modules, cached by version.

Release download sites are out of reach here, but the Go module proxy is not, so each
release is compiled from its own module at its tag with the version stamped in, as
upstream's release build does. Results live outside the repository in
``$SLIPWAY_CACHE_DIR`` (default ``~/.cache/slipway``), one folder per release, and a
release that is already there is never rebuilt. A user who has the official binaries
points ``SLIPWAY_PREBUILT_BIN_DIR`` at them and skips the build altogether.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slipway.localcluster.kit import (
    ETCD_VERSIONS,
    KUBERNETES_VERSIONS,
    KWOK,
    Release,
    default_releases,
    etcd_release,
    kubernetes_release,
    kwok_release,
)

MIN_GO = (1, 26)

# Tools the migration runs beside two clusters, built like the kit (exact module version, cached
# by version) but only on demand (`make test-migration`): Velero, its AWS object-store plugin (the
# release of its compatibility matrix for Velero 1.18) and gofakes3, a small S3 server standing in
# for the bucket on this machine.
VELERO = Release("velero", "1.18.3", ("velero",))
VELERO_AWS_PLUGIN = Release("velero-plugin-for-aws", "1.14.3", ("velero-plugin-for-aws",))
GOFAKES3 = Release("gofakes3", "1.2.0", ("gofakes3",))
TOOLS = {r.product: r for r in (VELERO, VELERO_AWS_PLUGIN, GOFAKES3)}
# module, main package; Velero's stamped version as its release build does. controller-runtime's
# metrics listener (":8080", no Velero flag sets it) is switched off at link time: two Velero
# servers share this host's network, where in a cluster each pod has its own.
_VELERO_LDFLAGS = " ".join(
    f"-X github.com/vmware-tanzu/velero/pkg/buildinfo.{key}={value}"
    for key, value in (("Version", "v{v}"), ("GitSHA", "v{v}-gomodule"), ("GitTreeState", "clean"))
)
TOOL_BUILDS = {
    "velero": (
        "github.com/vmware-tanzu/velero",
        "cmd/velero",
        _VELERO_LDFLAGS + " -X sigs.k8s.io/controller-runtime/pkg/metrics/server.DefaultBindAddress=0",
    ),
    "velero-plugin-for-aws": ("github.com/vmware-tanzu/velero-plugin-for-aws", "velero-plugin-for-aws", ""),
    "gofakes3": ("github.com/johannesboyne/gofakes3", "cmd/gofakes3", ""),
}


class BinaryError(RuntimeError):
    """A binary could not be found or built; the message says which and why."""


def cache_root() -> Path:
    return Path(os.environ.get("SLIPWAY_CACHE_DIR", Path.home() / ".cache" / "slipway"))


def release_dir(release: Release) -> Path:
    return cache_root() / "bin" / release.key


def _prebuilt(release: Release, name: str) -> Path | None:
    root = os.environ.get("SLIPWAY_PREBUILT_BIN_DIR")
    if not root:
        return None
    for candidate in (Path(root) / release.key / name, Path(root) / name):
        if candidate.is_file() and f"v{release.version}" in _version_output(candidate):
            return candidate
    return None


def binary(release: Release, name: str) -> Path:
    """Path of one binary of a release, which must already be built or prebuilt."""
    found = _prebuilt(release, name)
    if found:
        return found
    path = release_dir(release) / name
    if not path.is_file():
        build = (
            f"slipway-local build {release.product}={release.version}"
            if release.product in TOOLS
            else "make binaries"
        )
        raise BinaryError(
            f"{name} {release.version} is not built yet: run `{build}` "
            f"(or set SLIPWAY_PREBUILT_BIN_DIR to a folder holding it)"
        )
    return path


def is_available(release: Release) -> bool:
    try:
        for name in release.binaries:
            binary(release, name)
    except BinaryError:
        return False
    return True


# How each binary prints its own version.
VERSION_ARGS = {
    "kubectl": ["version", "--client"],
    "etcdctl": ["version"],
    "etcdutl": ["version"],
    "velero": ["version", "--client-only"],
}
# Binaries with no version flag (a plugin only speaks to Velero): their folder names the version.
UNVERSIONED = frozenset({"velero-plugin-for-aws", "gofakes3"})


def _version_output(path: Path) -> str:
    args = VERSION_ARGS.get(path.name, ["--version"])
    try:
        out = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    return out.stdout + out.stderr


def check_go() -> str:
    """Return the go executable, or refuse with the reason the build cannot start."""
    go = shutil.which("go")
    if go is None:
        raise BinaryError(
            "Go toolchain not found on PATH: install Go >= 1.26, or set "
            "SLIPWAY_PREBUILT_BIN_DIR to a folder of official binaries"
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if not match or (int(match[1]), int(match[2])) < MIN_GO:
        raise BinaryError(f"Go {out.stdout.strip()} is too old: Kubernetes needs Go >= 1.26")
    return go


def _run(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise BinaryError(
            f"`{' '.join(cmd[:3])} …` failed in {cwd}; last lines of {log}:\n" + "\n".join(tail)
        )


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-buildvcs=false -mod=mod", GOTOOLCHAIN="local")
    return env


def _module_gomod(go: str, module: str, version: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [go, "list", "-m", "-json", f"{module}@{version}"],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    if out.returncode != 0:
        raise BinaryError(f"the Go module proxy does not serve {module}@{version}: {out.stderr.strip()}")
    match = re.search(r'"GoMod":\s*"([^"]+)"', out.stdout)
    if not match:
        raise BinaryError(f"no go.mod found for {module}@{version}")
    return Path(match[1]).read_text()


def _unserved(go: str, modules: list[str], version: str, env: dict[str, str]) -> set[str]:
    """Which of ``modules`` the module proxy will not hand out at ``version`` (one request)."""
    out = subprocess.run(
        [go, "mod", "download", "-json", *(f"{m}@{version}" for m in modules)],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    found = re.findall(r'"Path":\s*"([^"]+)",\s*"Version":\s*"[^"]+",\s*"Error":', out.stdout)
    return set(found)


def _staging_versions(go: str, staging: list[str], twin: str, env: dict[str, str]) -> dict[str, str]:
    """Each staging module at its v0 twin of the release. A few exact twins of older patches
    are refused by the proxy this machine reaches ("not available"); such a module falls back
    to the nearest older patch of the same minor that is served, and the build says so."""
    chosen = dict.fromkeys(staging, twin)
    missing = _unserved(go, staging, twin, env)
    major_minor, _, patch = twin.rpartition(".")
    for older in range(int(patch) - 1, -1, -1):
        if not missing:
            break
        candidate = f"{major_minor}.{older}"
        still = _unserved(go, sorted(missing), candidate, env)
        for mod in missing - still:
            chosen[mod] = candidate
            print(f"note: {mod}@{twin} is not served; using {candidate} (same minor)", flush=True)
        missing = still
    if missing:
        raise BinaryError(f"no patch of {', '.join(sorted(missing))} at {major_minor}.x is served")
    return chosen


def _kubernetes_wrapper(go: str, version: str, env: dict[str, str]) -> str:
    """A go.mod that builds k8s.io/kubernetes: every staging module pinned to its v0 twin."""
    upstream = _module_gomod(go, "k8s.io/kubernetes", f"v{version}", env)
    staging = sorted(set(re.findall(r"^\s+(k8s\.io/[\w.-]+) v0\.0\.0$", upstream, re.M)))
    # Never imported by the binaries built here, and often not served at all.
    staging = [m for m in staging if m != "k8s.io/sample-apiserver"]
    go_line = re.search(r"^go (\S+)$", upstream, re.M)
    twin = "v0." + version.split(".", 1)[1]
    versions = _staging_versions(go, staging, twin, env)
    replaces = "\n".join(f"\t{mod} => {mod} {versions[mod]}" for mod in staging)
    return (
        "module slipway.local/kubernetes-build\n\n"
        f"go {go_line[1] if go_line else '1.26.0'}\n\n"
        f"require k8s.io/kubernetes v{version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def _kubernetes_ldflags(version: str) -> str:
    major, minor, _ = version.split(".")
    build_date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    values = {
        "gitVersion": f"v{version}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "gitCommit": f"v{version}-gomodule",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{key}={value}" for key, value in values.items()]
    return " ".join(flags)


def _tool_gomod(go: str, release: Release, env: dict[str, str]) -> str:
    """A go.mod that builds a tool at its release with the dependencies its own go.mod pins.

    A dependency's replace directives are ignored, so the tool's own (Velero pins a kopia fork)
    are carried over; a k8s.io module the proxy refuses at its exact patch falls back to the
    nearest older served patch of the same minor, as for Kubernetes' staging modules."""
    module = TOOL_BUILDS[release.product][0]
    upstream = _module_gomod(go, module, f"v{release.version}", env)
    replaces = re.findall(r"^replace\s+([^(\s].*)$", upstream, re.M)
    for block in re.findall(r"^replace\s*\((.*?)^\)", upstream, re.M | re.S):
        replaces += [line.strip() for line in block.splitlines() if line.strip()]
    pinned: dict[str, list[str]] = {}
    for mod, version in re.findall(r"^\s+(k8s\.io/[\w./-]+) (v0\.\d+\.\d+)(?:\s|$)", upstream, re.M):
        pinned.setdefault(version, []).append(mod)
    for version, mods in pinned.items():
        for mod, chosen in _staging_versions(go, sorted(set(mods)), version, env).items():
            if chosen != version:
                replaces.append(f"{mod} => {mod} {chosen}")
    go_line = re.search(r"^go (\S+)$", upstream, re.M)
    body = (
        f"module slipway.local/{release.product}-build\n\n"
        f"go {go_line[1] if go_line else '1.26.0'}\n\n"
        f"require {module} v{release.version}\n"
    )
    if replaces:
        body += "\nreplace (\n" + "".join(f"\t{r}\n" for r in replaces) + ")\n"
    return body


def _build(release: Release, go: str) -> None:
    env = _go_env()
    work = cache_root() / "build" / release.key
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    out = Path(tempfile.mkdtemp(prefix=f"{release.key}-", dir=cache_root()))
    if release.product == "kubernetes":
        (work / "go.mod").write_text(_kubernetes_wrapper(go, release.version, env))
        pkgs = [f"k8s.io/kubernetes/cmd/{name}" for name in release.binaries]
        ldflags = _kubernetes_ldflags(release.version)
        _run([go, "mod", "download", "k8s.io/kubernetes"], work, log, env)
    elif release.product in TOOLS:
        module, main, extra = TOOL_BUILDS[release.product]
        (work / "go.mod").write_text(_tool_gomod(go, release, env))
        pkgs = [f"{module}/{main}"]
        ldflags = " ".join(["-s -w", extra.format(v=release.version)]).strip()
        _run([go, "mod", "download", module], work, log, env)
    elif release.product == "etcd":
        mods = ("server", "etcdctl", "etcdutl")
        # The proxy serves some patches' server module but not their client tools (3.5.32):
        # the tools' code then comes from the nearest served patch of the same minor (same
        # protocol and storage format; they report the release, whose api module they link),
        # and the build says which.
        paths = [f"go.etcd.io/etcd/{m}/v3" for m in mods]
        served = _staging_versions(go, paths, f"v{release.version}", env)
        if served[paths[0]] != f"v{release.version}":
            raise BinaryError(f"etcd server v{release.version} is not served by the Go module proxy")
        requires = "\n".join(f"\t{p} {served[p]}" for p in paths)
        (work / "go.mod").write_text(
            f"module slipway.local/etcd-build\n\ngo 1.26.0\n\nrequire (\n{requires}\n)\n"
        )
        pkgs = [f"go.etcd.io/etcd/{m}/v3" for m in mods]
        ldflags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v{release.version}"
    else:
        (work / "go.mod").write_text(
            f"module slipway.local/kwok-build\n\ngo 1.26.0\n\nrequire sigs.k8s.io/kwok v{release.version}\n"
        )
        pkgs = ["sigs.k8s.io/kwok/cmd/kwok"]
        ldflags = f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v{release.version}"
    _run([go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out) + "/", *pkgs], work, log, env)
    # Go names a binary after the module path less its /v3 suffix: etcd's server is "server".
    if (out / "server").exists():
        (out / "server").rename(out / "etcd")
    _check_built(release, out)
    target = release_dir(release)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    out.rename(target)


def _check_built(release: Release, out: Path) -> None:
    """Every binary there, reporting the release's version."""
    for name in release.binaries:
        path = out / name
        if not path.is_file():
            raise BinaryError(f"build of {release.key} produced no {name} in {out}")
        if name in UNVERSIONED:
            continue
        text = _version_output(path)
        if release.version not in text:
            raise BinaryError(f"{name} reports {text.strip()!r}, expected v{release.version}")


def ensure(release: Release) -> Path:
    """Make sure every binary of a release is available; build what is missing."""
    if is_available(release):
        return release_dir(release)
    go = check_go()
    started = time.monotonic()
    print(f"building {release.key} ({', '.join(release.binaries)}) from Go modules…", flush=True)
    _build(release, go)
    print(f"built {release.key} in {time.monotonic() - started:.0f}s", flush=True)
    return release_dir(release)


def parse_release(spec: str) -> Release:
    """``kubernetes=1.36.3``, ``etcd=3.6.16`` or ``kwok=0.8.0``; unknown versions are refused."""
    product, _, version = spec.partition("=")
    version = version.lstrip("v")
    known = {"kubernetes": KUBERNETES_VERSIONS, "etcd": ETCD_VERSIONS, "kwok": (KWOK,)}
    known |= {name: (tool.version,) for name, tool in TOOLS.items()}
    if product not in known:
        raise BinaryError(f"unknown product {product!r}: expected one of {', '.join(known)}")
    if version not in known[product]:
        raise BinaryError(
            f"unknown {product} version {version!r}: the local kit has {', '.join(known[product])}"
        )
    if product in TOOLS:
        return TOOLS[product]
    builders = {"kubernetes": kubernetes_release, "etcd": etcd_release, "kwok": kwok_release}
    return builders[product](version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("releases", nargs="*", help="product=version; default: the whole kit")
    args = parser.parse_args(argv)
    try:
        releases = [parse_release(s) for s in args.releases] or default_releases()
        for release in releases:
            print(f"{release.key}: {ensure(release)}", flush=True)
    except BinaryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
