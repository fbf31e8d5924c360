"""``tweetoscope cluster up|down|status``: the Dask cluster on Kubernetes (dask-kubernetes operator).

The cluster spec is the manifest ``dask-k8s/operator/daskcluster.yaml`` (the same file
``kubectl apply`` would use), with its name, image and worker count overridable; the
worker pool is elastic through ``KubeCluster.adapt(minimum, maximum)``, which creates the
operator's ``DaskAutoscaler``. Needs the operator installed in the cluster and credentials
(a kubeconfig, or running in a pod).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

__all__ = ["ClusterError", "find_manifest", "cluster_spec", "cluster_up", "cluster_down", "cluster_status",
           "scheduler_address"]

MANIFEST_ENV = "TWEETOSCOPE_DASK_MANIFEST"
_CANDIDATES = (Path(__file__).resolve().parents[1] / "dask-k8s" / "operator" / "daskcluster.yaml",
               Path("/opt/tweetoscope/dask-k8s/operator/daskcluster.yaml"))


class ClusterError(ValueError):
    """The Kubernetes cluster or the Dask cluster on it cannot be reached or managed; says why."""


def find_manifest(path: str | Path | None = None) -> Path:
    """The DaskCluster manifest: ``path``, else ``$TWEETOSCOPE_DASK_MANIFEST``, else the repository's or the image's."""
    if path:
        candidates = [Path(path)]
    elif os.environ.get(MANIFEST_ENV):
        candidates = [Path(os.environ[MANIFEST_ENV])]
    else:
        candidates = list(_CANDIDATES)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ClusterError(f"no DaskCluster manifest found (looked for {', '.join(map(str, candidates))}); "
                       "give one with --manifest")


def cluster_spec(manifest: str | Path | None = None, *, name: str | None = None, image: str | None = None,
                 workers: int | None = None) -> dict[str, Any]:
    """The ``DaskCluster`` resource of ``manifest`` with ``name``, ``image`` (scheduler and workers) and the
    initial worker count replaced. Raises :class:`ClusterError` if it is not a DaskCluster."""
    import yaml

    path = find_manifest(manifest)
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or spec.get("kind") != "DaskCluster" or \
            spec.get("apiVersion") != "kubernetes.dask.org/v1":
        raise ClusterError(f"{path} is not a kubernetes.dask.org/v1 DaskCluster")
    spec = copy.deepcopy(spec)
    if name:
        old = spec["metadata"]["name"]
        spec["metadata"]["name"] = name
        selector = spec["spec"]["scheduler"].get("service", {}).get("selector", {})
        if selector.get("dask.org/cluster-name") == old:
            selector["dask.org/cluster-name"] = name
    if image:
        for part in ("scheduler", "worker"):
            for container in spec["spec"][part]["spec"]["containers"]:
                container["image"] = image
    if workers is not None:
        if workers < 0:
            raise ClusterError(f"workers must be >= 0, got {workers}")
        spec["spec"]["worker"]["replicas"] = workers
    return spec


def _check_bounds(minimum: int, maximum: int) -> None:
    if minimum < 0 or maximum < 1 or minimum > maximum:
        raise ClusterError(f"need 0 <= --min <= --max and --max >= 1, got --min {minimum} --max {maximum}")


def _kube(call, what: str):
    """Run a dask-kubernetes call, turning "no cluster / no credentials" into a :class:`ClusterError`."""
    try:
        return call()
    except ClusterError:
        raise
    except Exception as exc:  # kr8s and kubernetes raise many kinds; say what failed and why
        raise ClusterError(f"{what}: {exc} (is a Kubernetes cluster reachable, with credentials in $KUBECONFIG or "
                           "~/.kube/config, and the dask-kubernetes operator installed?)") from None


def _kube_cluster():
    """dask-kubernetes' ``KubeCluster``, or a :class:`ClusterError` naming the extra that provides it."""
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as exc:
        raise ClusterError(f"{exc}: `tweetoscope cluster` and `run --cluster k8s` need the k8s extra "
                           "(pip install 'tweetoscope[k8s]', or the image's k8s target: "
                           "docker build --target k8s)") from None
    return KubeCluster


def cluster_up(spec: dict[str, Any], *, namespace: str = "default", minimum: int = 1, maximum: int = 10):
    """Create the Dask cluster of ``spec`` (or attach to it if it runs), make it adaptive; returns the KubeCluster."""
    _check_bounds(minimum, maximum)
    KubeCluster = _kube_cluster()

    cluster = _kube(lambda: KubeCluster(custom_cluster_spec=spec, namespace=namespace, shutdown_on_close=False,
                                        quiet=True), f"creating DaskCluster {spec['metadata']['name']}")
    _kube(lambda: cluster.adapt(minimum=minimum, maximum=maximum), "creating its DaskAutoscaler")
    return cluster


def _existing(name: str, namespace: str):
    KubeCluster = _kube_cluster()

    return _kube(lambda: KubeCluster.from_name(name, namespace=namespace, quiet=True),
                 f"finding DaskCluster {name} in namespace {namespace}")


def cluster_down(name: str, *, namespace: str = "default") -> None:
    """Delete the Dask cluster ``name`` (scheduler, workers, autoscaler)."""
    cluster = _existing(name, namespace)
    cluster.shutdown_on_close = True
    _kube(cluster.close, f"deleting DaskCluster {name}")


def cluster_status(name: str, *, namespace: str = "default") -> dict[str, Any]:
    """Scheduler address, dashboard link and worker count of the Dask cluster ``name``."""
    cluster = _existing(name, namespace)
    info = _kube(lambda: cluster.scheduler_info, "reading the scheduler's state")
    return {"name": name, "namespace": namespace, "scheduler": cluster.scheduler_address,
            "dashboard": cluster.dashboard_link, "workers": len((info or {}).get("workers", {}))}


def scheduler_address(name: str, *, namespace: str = "default") -> str:
    """Address of the running Dask cluster ``name``'s scheduler (for ``tweetoscope run --cluster k8s``)."""
    return _existing(name, namespace).scheduler_address
