"""cluster/: the configs parse and use only real options of Ray, KubeRay and artdate."""

import json
import os
import shlex

import jsonschema
import ray
import yaml

from artdate.cli import build_parser
from artdate.jobs import local_storage
from tests.support.helpers import ROOT

CLUSTER = os.path.join(ROOT, "cluster")


def load(name):
    with open(os.path.join(CLUSTER, name)) as f:
        return yaml.safe_load(f)


def ray_start_options():
    from ray.scripts.scripts import start

    return {name for param in start.params for name in param.opts}


def test_ray_up_config_matches_rays_schema():
    config = load("aws-gpu.yaml")
    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        jsonschema.validate(config, json.load(f))
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))  # Ray's own checks, as `ray up` runs them
    assert config["available_node_types"]["gpu_worker"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert config["available_node_types"]["gpu_worker"]["max_workers"] == config["max_workers"] > 0
    assert any("pip install" in c and "/home/ubuntu/artdate" in c for c in config["setup_commands"])


def test_ray_start_commands_use_real_flags_and_keep_the_dashboard_private():
    config = load("aws-gpu.yaml")
    known = ray_start_options()
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        words = shlex.split(command)
        if words[:2] == ["ray", "start"]:
            flags = {w.split("=")[0] for w in words if w.startswith("--")}
            assert flags <= known, flags - known
    head = " ".join(config["head_start_ray_commands"])
    hosts = [w for w in shlex.split(head) if w.startswith("--dashboard-host")]
    assert hosts == ["--dashboard-host=127.0.0.1"]  # the head's loopback only; reached through `ray dashboard`


# Fields of KubeRay's ray.io/v1 resources that these manifests may use (from the CRDs' documented
# samples: ray-cluster.autoscaler.yaml, ray-job.sample.yaml).
RAYCLUSTER_SPEC = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec", "workerGroupSpecs"}
HEAD_GROUP = {"serviceType", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"}
AUTOSCALER_OPTIONS = {"upscalingMode", "idleTimeoutSeconds", "image", "imagePullPolicy", "resources"}
RAYJOB_SPEC = {
    "entrypoint",
    "clusterSelector",
    "rayClusterSpec",
    "shutdownAfterJobFinishes",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "runtimeEnvYAML",
    "submitterConfig",
    "backoffLimit",  # KubeRay 1.2+: a failed Ray job is submitted again
    "submissionMode",
    "suspend",
}


def test_raycluster_manifest():
    cluster = load("kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    assert set(spec) <= RAYCLUSTER_SPEC and set(spec["autoscalerOptions"]) <= AUTOSCALER_OPTIONS
    assert set(spec["headGroupSpec"]) <= HEAD_GROUP
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"  # not exposed outside the Kubernetes cluster
    assert spec["rayVersion"] == ray.__version__
    known = {name.lstrip("-") for name in ray_start_options()}
    groups = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for group in groups:
        assert set(group["rayStartParams"]) <= known
        for container in group["template"]["spec"]["containers"]:
            assert set(container) <= {
                "name",
                "image",
                "envFrom",
                "env",
                "ports",
                "resources",
                "lifecycle",
                "volumeMounts",
            }
    gpu = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"


def test_rayjob_runs_train_then_score_with_real_artdate_options():
    job = load("kuberay/rayjob.yaml")
    cluster = load("kuberay/raycluster.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob") and set(job["spec"]) <= RAYJOB_SPEC
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["bash", "-c"]
    commands = [shlex.split(part) for part in words[2].split("&&")]
    assert [c[:2] for c in commands] == [["artdate", "train"], ["artdate", "score"]]
    parser = build_parser()
    for command in commands:
        parsed = parser.parse_args(command[1:])  # exits (fails the test) on an unknown option
        assert local_storage(command[1:]) == []  # shared storage only: the pods are separate machines
        # The GPU workers autoscale from 0: the device is named, not left to what a cold cluster shows.
        device = parsed.gpus_per_worker if command[1] == "train" else parsed.gpus_per_actor
        assert device == 1
    # What retries is a new submission of the whole entrypoint: train must continue its run then.
    assert job["spec"]["backoffLimit"] > 0 and "--resume" in commands[0]


def test_dockerfile_installs_the_project_on_rays_image():
    with open(os.path.join(CLUSTER, "Dockerfile")) as f:
        text = f.read()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in text and "pip install" in text
