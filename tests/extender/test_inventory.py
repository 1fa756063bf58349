from __future__ import annotations

import numpy as np

from tfsched.scoring.inventory import GPUSpec, Inventory

GiB = 2**30


def test_inventory_grows_and_reuses_slots():
    inv = Inventory(gpu_capacity=2, node_capacity=2, slots=1)
    for n in range(40):
        inv.set_node_present(f"n{n}", True)
        for j in range(3):
            inv.upsert_gpu(GPUSpec(f"n{n}-g{j}", f"n{n}", tflops=100, vram=GiB, device_index=j))
    assert inv.node_present[:40].all()
    assert len(inv.gpu_index) == 120
    assert sorted(inv.gpus_of_node(inv.node_index["n39"]).tolist()) == [inv.gpu(f"n39-g{j}") for j in range(3)]
    slot = inv.gpu("n5-g1")
    inv.remove_gpu("n5-g1")
    assert slot not in inv.gpus_of_node(inv.node_index["n5"])
    assert inv.upsert_gpu(GPUSpec("new", "n5", tflops=1, vram=1)) == slot


def test_moving_a_gpu_to_another_node():
    inv = Inventory()
    g = inv.upsert_gpu(GPUSpec("g", "a", tflops=100, vram=GiB))
    inv.upsert_gpu(GPUSpec("g", "b", tflops=100, vram=GiB))
    assert inv.gpus_of_node(inv.node_index["a"]).size == 0
    assert inv.gpus_of_node(inv.node_index["b"]).tolist() == [g]


def test_eligibility_filters():
    inv = Inventory()
    inv.upsert_gpu(GPUSpec("a", "n", tflops=1, vram=1, model="A100", vendor="NVIDIA", pool="p1", device_index=0))
    inv.upsert_gpu(GPUSpec("b", "n", tflops=1, vram=1, model="H100", vendor="NVIDIA", pool="p2", device_index=1))
    inv.upsert_gpu(GPUSpec("c", "n", tflops=1, vram=1, model="H100", usable=False, device_index=2))
    names = np.array(inv.gpu_names)
    assert names[inv.eligible_mask()[: len(names)]].tolist() == ["a", "b"]
    assert names[inv.eligible_mask(models=("H100",))[: len(names)]].tolist() == ["b"]
    assert names[inv.eligible_mask(pool="p1")[: len(names)]].tolist() == ["a"]
    assert names[inv.eligible_mask(models=("T4",))[: len(names)]].tolist() == []
    # A list: any of its models (an unknown one matches nothing and spoils nothing).
    assert names[inv.eligible_mask(models=("T4", "A100", "H100"))[: len(names)]].tolist() == ["a", "b"]
    assert names[inv.eligible_mask(models=("T4", "X"))[: len(names)]].tolist() == []
    assert names[inv.eligible_mask(device_indices=frozenset({1, 2}))[: len(names)]].tolist() == ["b"]


def test_node_indices_of_known_unknown_single_and_no_names():
    inv = Inventory()
    for name in ("a", "b", "c"):
        inv.set_node_present(name, True)
    known = [inv.node_index[n] for n in ("c", "a", "b")]
    assert inv.node_indices(["c", "a", "b"]).tolist() == known
    assert inv.node_indices(["c", "ghost", "b"]).tolist() == [known[0], -1, known[2]]
    assert inv.node_indices(["a"]).tolist() == [known[1]] and inv.node_indices(["ghost"]).tolist() == [-1]
    empty = inv.node_indices([])
    assert empty.dtype == np.int32 and empty.size == 0
