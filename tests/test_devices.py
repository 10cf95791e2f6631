"""Which device a run uses: GPUs when the cluster has them or its autoscaler can add them."""

import pytest

from artdate.core.raycluster import resolve_gpus

pytestmark = pytest.mark.usefixtures("local_ray")


def report_autoscaler_node_types(ray, gpus_per_node: int, max_nodes: int) -> None:
    """What the autoscaler of `ray up` or KubeRay reports to the GCS: its node types and their limits."""
    from ray.core.generated import autoscaler_pb2
    from ray.experimental import internal_kv

    config = autoscaler_pb2.ClusterConfig()
    group = config.node_group_configs.add(name="gpu-workers", min_count=0, max_count=max_nodes)
    group.resources["CPU"] = 8
    group.resources["GPU"] = gpus_per_node
    internal_kv._internal_kv_put(
        ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY,
        config.SerializeToString(),
        overwrite=True,
        namespace=ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE,
    )


def test_cpu_cluster_without_autoscaler_uses_cpu_and_warns_for_a_large_backbone(local_ray, capfd):
    assert resolve_gpus(-1, 4, "worker", "resnet152") == 0.0
    err = capfd.readouterr().err
    assert "device: CPU, 4 worker(s)" in err and "WARNING: resnet152 on CPU" in err
    assert resolve_gpus(0, 4, "worker", "resnet152") == 0.0  # an explicit choice: no warning
    assert "WARNING" not in capfd.readouterr().err


def test_gpus_the_autoscaler_can_add_are_used_on_a_cold_cluster(local_ray, capfd):
    report_autoscaler_node_types(local_ray, gpus_per_node=1, max_nodes=8)
    try:
        assert local_ray.cluster_resources().get("GPU", 0) == 0  # no GPU node is up yet
        assert resolve_gpus(-1, 8, "worker", "resnet152") == 1.0
        err = capfd.readouterr().err
        assert "device: GPU, 8 worker(s) x 1 GPU (0 GPU(s) in the cluster now, up to 8 with autoscaling)" in err
        assert "WARNING" not in err
        assert resolve_gpus(0, 2, "actor", "resnet152") == 0.0  # the user can still choose CPU
    finally:
        report_autoscaler_node_types(local_ray, gpus_per_node=0, max_nodes=0)


def test_sizing_the_batch_for_gpus_the_cluster_never_gets_stops_naming_what_it_asked_for(local_ray):
    """--batch-size 0 on GPUs measures the card first (gpu_memory.card_for_workers): with no GPU to be
    had, it ends with one line instead of waiting for ever."""
    from artdate.train.gpu_memory import card_for_workers

    with pytest.raises(RuntimeError, match=r"no GPU \(1 per worker\) could be had within 2 s .*--batch-size"):
        card_for_workers("resnet18", 1, 64, 1.0, timeout=2)
