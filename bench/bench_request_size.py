"""The largest legitimate extender request, and what parsing it costs.

kube-scheduler with ``nodeCacheCapable: false`` sends whole Node objects:
``{"Pod": ..., "Nodes": {"items": [...]}, "NodeNames": null}``.  This builds a
Node as a kubelet registers it on a GPU machine (labels, annotations,
managedFields, taints, capacity, conditions, 40 images, ...), measures its
JSON, the 5,000-node request, and the memory orjson needs to parse that
request: traced by tracemalloc and as peak RSS, each in a fresh process so
neither the build of the body nor the other measurement pollutes it.  The
figures back the constants of ``extender/budget.py``.

kube-scheduler strips managedFields from its *pod* informer only, not from
nodes, so they are part of what it sends.

Linux only (peak RSS is VmHWM, reset through /proc/self/clear_refs).  It also
parses hostile bodies of the same size, built to expand as much as possible.

Run: ``.venv/bin/python bench/bench_request_size.py [--nodes N] [--images K]``.
Not a test: it prints its figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

MiB = 2**20
TS = "2025-10-01T08:00:00Z"

_IMAGES = [
    ("nvcr.io/nvidia/pytorch", "24.08-py3", 10_512_331_264),
    ("nvcr.io/nvidia/tritonserver", "24.08-py3", 8_213_442_560),
    ("nvcr.io/nvidia/cuda", "12.4.1-cudnn-devel-ubuntu22.04", 4_718_592_000),
    ("nvcr.io/nvidia/k8s/dcgm-exporter", "3.3.7-3.5.0-ubuntu22.04", 1_372_516_352),
    ("nvcr.io/nvidia/k8s-device-plugin", "v0.16.2", 140_509_184),
    ("nvcr.io/nvidia/gpu-operator", "v24.6.1", 188_743_680),
    ("nvcr.io/nvidia/driver", "550.90.07-ubuntu22.04", 1_610_612_736),
    ("nvcr.io/nvidia/k8s/container-toolkit", "v1.16.1-ubuntu20.04", 131_072_000),
    ("nvcr.io/nvidia/gpu-feature-discovery", "v0.8.2-ubi8", 83_886_080),
    ("nvcr.io/nvidia/cloud-native/k8s-mig-manager", "v0.8.0-ubuntu20.04", 157_286_400),
    ("registry.k8s.io/kube-proxy", "v1.31.1", 30_932_992),
    ("registry.k8s.io/pause", "3.10", 320_368),
    ("registry.k8s.io/nfd/node-feature-discovery", "v0.16.4", 77_594_624),
    ("registry.k8s.io/sig-storage/csi-node-driver-registrar", "v2.11.1", 12_582_912),
    ("registry.k8s.io/sig-storage/livenessprobe", "v2.13.1", 11_534_336),
    ("docker.io/calico/node", "v3.28.1", 124_780_544),
    ("docker.io/calico/cni", "v3.28.1", 94_371_840),
    ("docker.io/calico/pod2daemon-flexvol", "v3.28.1", 7_340_032),
    ("quay.io/prometheus/node-exporter", "v1.8.2", 11_534_336),
    ("docker.io/fluent/fluent-bit", "3.1.7", 34_603_008),
    ("public.ecr.aws/ebs-csi-driver/aws-ebs-csi-driver", "v1.34.0", 31_457_280),
    ("docker.io/tensorfusion/tensor-fusion-worker", "v1.28.3", 2_147_483_648),
    ("docker.io/tensorfusion/tensor-fusion-hypervisor", "v1.28.3", 268_435_456),
    ("docker.io/vllm/vllm-openai", "v0.6.1", 9_663_676_416),
    ("ghcr.io/huggingface/text-generation-inference", "2.2.0", 6_442_450_944),
    ("docker.io/rayproject/ray-ml", "2.35.0-py311-gpu", 11_811_160_064),
    ("docker.io/pytorch/pytorch", "2.4.1-cuda12.4-cudnn9-runtime", 7_516_192_768),
    ("docker.io/tensorflow/tensorflow", "2.17.0-gpu", 7_301_160_960),
    ("ghcr.io/kserve/kserve-controller", "v0.13.1", 62_914_560),
    ("docker.io/kubeflow/training-operator", "v1-5a5f92d", 58_720_256),
    ("docker.io/jupyter/pytorch-notebook", "cuda12-2024-09-02", 6_979_321_856),
    ("docker.io/library/python", "3.11-slim-bookworm", 131_072_000),
    ("docker.io/library/busybox", "1.36.1", 4_404_019),
    ("docker.io/library/ubuntu", "22.04", 77_594_624),
    ("docker.io/grafana/promtail", "3.1.1", 193_986_560),
    ("quay.io/jetstack/cert-manager-cainjector", "v1.15.3", 41_943_040),
    ("docker.io/istio/proxyv2", "1.23.1", 96_468_992),
    ("docker.io/bitnami/redis", "7.4.0-debian-12-r2", 104_857_600),
    ("nvcr.io/nvidia/nemo", "24.07", 21_474_836_480),
    ("nvcr.io/nvidia/tensorrt", "24.08-py3", 7_838_695_424),
]


IMAGES_PER_NODE = 40


def _images(count: int) -> list[tuple[str, str, int]]:
    """``count`` images: the list above, then more tags of it when more are asked for."""
    return [
        (repo, tag if k < len(_IMAGES) else f"{tag}-r{k // len(_IMAGES)}", size)
        for k, (repo, tag, size) in ((k, _IMAGES[k % len(_IMAGES)]) for k in range(count))
    ]


def _digest(i: int, salt: str) -> str:
    """A sha256-looking hex string, different per image and node."""
    return (f"{salt}{i:08x}" * 8)[:64].ljust(64, "0")


def node_object(i: int) -> dict[str, Any]:
    """A GPU Node as the kubelet registers it and the controllers annotate it (8 × A100, EKS-like)."""
    name = f"ip-10-{i // 250 % 256}-{i % 250}-{i % 7 + 10}.us-west-2.compute.internal"
    ip = f"10.{i // 250 % 256}.{i % 250}.{i % 7 + 10}"
    instance = f"i-0{i:016x}"
    zone = "us-west-2" + "abc"[i % 3]
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": "p4d.24xlarge",
        "beta.kubernetes.io/os": "linux",
        "eks.amazonaws.com/capacityType": "ON_DEMAND",
        "eks.amazonaws.com/nodegroup": "gpu-a100-pool",
        "eks.amazonaws.com/nodegroup-image": "ami-0c55b159cbfafe1f0",
        "failure-domain.beta.kubernetes.io/region": "us-west-2",
        "failure-domain.beta.kubernetes.io/zone": zone,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "p4d.24xlarge",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
        "topology.ebs.csi.aws.com/zone": zone,
        "topology.kubernetes.io/region": "us-west-2",
        "topology.kubernetes.io/zone": zone,
    }
    annotations = {
        "alpha.kubernetes.io/provided-node-ip": ip,
        "csi.volume.kubernetes.io/nodeid": json.dumps({"ebs.csi.aws.com": instance}, separators=(",", ":")),
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    resources = {
        "cpu": "96",
        "ephemeral-storage": "524275692Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "1176609748Ki",
        "nvidia.com/gpu": "8",
        "pods": "110",
    }
    allocatable = resources | {"cpu": "95690m", "ephemeral-storage": "482123456789", "memory": "1165189588Ki"}
    conditions = [
        {
            "lastHeartbeatTime": TS,
            "lastTransitionTime": TS,
            "message": message,
            "reason": reason,
            "status": status,
            "type": kind,
        }
        for kind, status, reason, message in (
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ("NetworkUnavailable", "False", "CalicoIsUp", "Calico is running on this node"),
        )
    ]
    images = [
        {
            "names": [f"{repo}@sha256:{_digest(k, f'{i:x}')}", f"{repo}:{tag}"],
            "sizeBytes": size,
        }
        for k, (repo, tag, size) in enumerate(_images(IMAGES_PER_NODE))
    ]
    condition_fields = {
        f'k:{{"type":"{c["type"]}"}}': {
            ".": {},
            "f:lastHeartbeatTime": {},
            "f:lastTransitionTime": {},
            "f:message": {},
            "f:reason": {},
            "f:status": {},
            "f:type": {},
        }
        for c in conditions
    }
    managed_fields = [
        {
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {
                        ".": {},
                        "f:alpha.kubernetes.io/provided-node-ip": {},
                        "f:volumes.kubernetes.io/controller-managed-attach-detach": {},
                    },
                    "f:labels": {".": {}, **{f"f:{k}": {} for k in labels if not k.startswith("nvidia.com/")}},
                },
                "f:spec": {"f:providerID": {}},
            },
            "manager": "kubelet",
            "operation": "Update",
            "time": TS,
        },
        {
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:annotations": {"f:node.alpha.kubernetes.io/ttl": {}}},
                "f:spec": {"f:podCIDR": {}, "f:podCIDRs": {".": {}, 'v:"100.64.0.0/24"': {}}, "f:taints": {}},
            },
            "manager": "kube-controller-manager",
            "operation": "Update",
            "time": TS,
        },
        {
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {f"f:{k}": {} for k in labels if k.startswith("nvidia.com/")}},
            },
            "manager": "nfd-master",
            "operation": "Update",
            "time": TS,
        },
        {
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:annotations": {"f:csi.volume.kubernetes.io/nodeid": {}}},
                "f:status": {
                    "f:allocatable": {f"f:{k}": {} for k in allocatable},
                    "f:capacity": {f"f:{k}": {} for k in resources},
                    "f:conditions": condition_fields,
                    "f:daemonEndpoints": {"f:kubeletEndpoint": {"f:Port": {}}},
                    "f:images": {},
                    "f:nodeInfo": {
                        "f:architecture": {},
                        "f:bootID": {},
                        "f:containerRuntimeVersion": {},
                        "f:kernelVersion": {},
                        "f:kubeProxyVersion": {},
                        "f:kubeletVersion": {},
                        "f:machineID": {},
                        "f:operatingSystem": {},
                        "f:osImage": {},
                        "f:systemUUID": {},
                    },
                    "f:runtimeHandlers": {},
                },
            },
            "manager": "kubelet",
            "operation": "Update",
            "subresource": "status",
            "time": TS,
        },
    ]
    cidr = f"100.{64 + i // 256 % 64}.{i % 256}.0/24"
    return {
        "metadata": {
            "name": name,
            "uid": f"{i:08x}-5b2c-4c6e-9f0a-3d1e2b7c8a90",
            "resourceVersion": str(48_000_000 + i),
            "creationTimestamp": TS,
            "labels": labels,
            "annotations": annotations,
            "managedFields": managed_fields,
        },
        "spec": {
            "podCIDR": cidr,
            "podCIDRs": [cidr],
            "providerID": f"aws:///{zone}/{instance}",
            "taints": [
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "gpu-training", "effect": "NoSchedule"},
            ],
        },
        "status": {
            "capacity": resources,
            "allocatable": allocatable,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "InternalDNS", "address": name},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _digest(i, "ec2")[:32],
                "systemUUID": f"ec2{i:05x}-6f1a-2b3c-4d5e-6f7a8b9c0d1e",
                "bootID": f"{i:08x}-1a2b-3c4d-5e6f-7a8b9c0d1e2f",
                "kernelVersion": "5.10.224-212.876.amzn2.x86_64",
                "osImage": "Amazon Linux 2",
                "containerRuntimeVersion": "containerd://1.7.20",
                "kubeletVersion": "v1.31.1-eks-1552ad0",
                "kubeProxyVersion": "v1.31.1-eks-1552ad0",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": images,
            "runtimeHandlers": [
                {"name": "nvidia", "features": {"recursiveReadOnlyMounts": False}},
                {"name": "runc", "features": {"recursiveReadOnlyMounts": False}},
                {"name": "", "features": {"recursiveReadOnlyMounts": False}},
            ],
        },
    }


def pod_object() -> dict[str, Any]:
    """A TensorFusion GPU pod of a training job, as the scheduler holds it (managedFields trimmed)."""
    env = [{"name": f"ENV_{k}", "value": f"value-{k}"} for k in range(20)]
    return {
        "metadata": {
            "name": "train-llama-worker-0",
            "namespace": "ml-team",
            "uid": "3f1e2d4c-5b6a-4978-8695-a4b3c2d1e0f9",
            "resourceVersion": "48123456",
            "creationTimestamp": TS,
            "labels": {"app": "train-llama", "job-name": "train-llama", "tensor-fusion.ai/enabled": "true"},
            "annotations": {
                "tensor-fusion.ai/tflops-request": "100",
                "tensor-fusion.ai/tflops-limit": "200",
                "tensor-fusion.ai/vram-request": "16Gi",
                "tensor-fusion.ai/vram-limit": "32Gi",
                "tensor-fusion.ai/gpu-count": "2",
                "tensor-fusion.ai/workload": "train-llama",
                "tensor-fusion.ai/pool": "default-pool",
            },
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "train-llama", "uid": "0a1b2c3d", "controller": True}
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "trainer",
                    "image": "nvcr.io/nvidia/pytorch:24.08-py3",
                    "command": ["torchrun", "--nproc-per-node=2", "train.py"],
                    "env": env,
                    "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "shm", "mountPath": "/dev/shm"}],
                }
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "train-data"}},
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
            ],
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": "gpu-training", "effect": "NoSchedule"},
            ],
            "schedulerName": "default-scheduler",
            "restartPolicy": "Never",
            "priority": 0,
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }


def request_body(nodes: int) -> bytes:
    """ExtenderArgs as kube-scheduler sends them without a node cache (compact JSON, as Go writes it)."""
    items = [node_object(i) for i in range(nodes)]
    return orjson.dumps({"Pod": pod_object(), "Nodes": {"metadata": {}, "items": items}, "NodeNames": None})


def _status(field: str) -> int:
    """A byte figure of /proc/self/status (Linux): VmRSS now, VmHWM the peak since the last reset."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Set VmHWM to the current RSS, so it measures from here (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# Bodies built to expand as much as possible when parsed (the shapes are what the
# extender reads: an object with Pod and Nodes.items), to show what an attacker's
# body of the same size costs.
HOSTILE = {
    "nested lists [[0]]": b"[[0]],",
    "one-key objects {a:0}": b'{"a":0},',
    "empty lists []": b"[],",
    "one-char strings": b'"a",',
    "floats 1.5": b"1.5,",
}


def _hostile_body(unit: bytes, size: int) -> bytes:
    head = b'{"Pod":{"metadata":{"name":"p"}},"Nodes":{"items":['
    return head + unit * ((size - len(head)) // len(unit)) + b"0]}}"


def _child(mode: str, arg: str) -> None:
    """Measure one parse in this (fresh) process; print the figures as JSON."""
    body = _hostile_body(HOSTILE[mode[8:]], int(arg)) if mode.startswith("hostile:") else Path(arg).read_bytes()
    gc.collect()
    out: dict[str, float] = {"size": len(body)}
    if mode == "tracemalloc":
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        parsed = orjson.loads(body)
        kept, peak = tracemalloc.get_traced_memory()
        out |= {"peak": peak - base, "kept": kept - base}
    elif mode == "rss" or mode.startswith("hostile:"):
        before = _status("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        parsed = orjson.loads(body)
        out["seconds"] = time.perf_counter() - started
        out |= {"peak": _status("VmHWM") - before, "kept": _status("VmRSS") - before, "baseline": before}
    elif mode == "handler":
        # A /filter of such a body at its peak: aiohttp's read (a bytearray, then a bytes
        # copy of it), the parse, and the reply echoing every node back (all pass).
        from tfsched.extender import wire

        without_body = _status("VmRSS") - len(body)
        _reset_peak()
        buffer = bytearray(body)
        del body
        copy = bytes(buffer)
        del buffer
        parsed = wire.parse_scheduling_args(copy)
        reply = wire.passthrough_result(parsed)
        out |= {"peak": _status("VmHWM") - without_body, "reply": len(reply)}
    else:
        raise SystemExit(f"unknown mode {mode}")
    del parsed
    print(orjson.dumps(out).decode())


def _measure(mode: str, arg: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", mode, arg], capture_output=True, text=True, check=True)
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--images", type=int, default=40, help="images per node (kubelet reports at most 50)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "ARG"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        _child(*opts.child)
        return
    global IMAGES_PER_NODE
    IMAGES_PER_NODE = opts.images

    one = orjson.dumps(node_object(0))
    pod = orjson.dumps(pod_object())
    body = request_body(opts.nodes)
    n = len(body)
    print(f"one node ({opts.images} images): {len(one):,} bytes ({len(one) / 1024:.1f} KiB); pod: {len(pod):,} bytes")
    print(f"{opts.nodes:,}-node request: {n:,} bytes ({n / MiB:.1f} MiB)")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(body)
        f.flush()
        del body
        traced = _measure("tracemalloc", f.name)
        rss = _measure("rss", f.name)
        handler = _measure("handler", f.name)
    print(
        f"orjson.loads of it: {rss['seconds']:.2f} s; process baseline {rss['baseline'] / MiB:.0f} MiB (body included)"
    )
    print(
        f"  RSS:         peak +{rss['peak'] / MiB:,.0f} MiB ({rss['peak'] / n:.2f}× body), "
        f"kept +{rss['kept'] / MiB:,.0f} MiB ({rss['kept'] / n:.2f}×)"
    )
    print(
        f"  tracemalloc: peak {traced['peak'] / MiB:,.0f} MiB ({traced['peak'] / n:.2f}×), "
        f"kept {traced['kept'] / MiB:,.0f} MiB ({traced['kept'] / n:.2f}×)  "
        "(the peak counts orjson's document buffer, reserved whole but touched only in part)"
    )
    print(
        f"a passing /filter of it (body, read copy, parse, {handler['reply'] / MiB:.0f} MiB reply): "
        f"peak +{handler['peak'] / MiB:,.0f} MiB ({handler['peak'] / n:.2f}× body)"
    )
    print("hostile bodies of the same size, orjson.loads peak RSS (body excluded):")
    for shape in HOSTILE:
        h = _measure(f"hostile:{shape}", str(n))
        print(f"  {shape:24} +{h['peak'] / MiB:6,.0f} MiB ({h['peak'] / h['size']:5.2f}× body) in {h['seconds']:.2f} s")


if __name__ == "__main__":
    main()
