"""What a spiking network does while it runs: firing rates, synaptic operations and the usual energy estimate.

Counted with forward hooks over an evaluation set, per sample:

* firing rate of every spiking layer at every step (spikes / neurons), and the fraction of neurons that fired at
  least once (the official code's measure);
* for every convolution and linear layer, its dense multiply-accumulates per step (what the same layer costs in an
  ANN) and the mean value of its input. A layer fed by spikes only accumulates: its synaptic operations are
  ACs = dense MACs x mean input x T (spikes times fan-out; integer SEW sums and average-pooled spikes count by
  value). The first layer of a directly encoded image sees real values: MACs = dense MACs x T. A layer that
  ``TimeInvariant`` runs once for the T identical steps of a static image is counted as if it ran at every step,
  the convention of these estimates, so every network is counted alike.
* energy at 45 nm (Horowitz 2014, as SNN papers use): E = 4.6 pJ x MACs + 0.9 pJ x ACs, against the ANN of the
  same layers run once: E_ANN = 4.6 pJ x sum of dense MACs. Memory traffic is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tks.snn import LIF, TimeInvariant

E_MAC_PJ = 4.6
"""Energy of a 32-bit floating-point multiply-accumulate at 45 nm, in pJ."""
E_AC_PJ = 0.9
"""Energy of a 32-bit floating-point accumulate at 45 nm, in pJ."""


def energy_pj(macs: float, acs: float, e_mac: float = E_MAC_PJ, e_ac: float = E_AC_PJ) -> float:
    """E = e_mac x MACs + e_ac x ACs, in pJ."""
    return e_mac * macs + e_ac * acs


def dense_macs(module: nn.Module, output: Tensor) -> int:
    """Multiply-accumulates of one call of a conv or linear layer on a dense input (all samples of the call)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    raise TypeError(f"no MAC count for {type(module).__name__}")


@torch.inference_mode()
def measure_activity(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    encode: Callable[[Tensor], Tensor],
    device: torch.device,
    real_valued_input: bool = True,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Firing rates, operation counts and energy of ``model`` over an evaluation set (see the module docstring).

    Args:
        model: a network ``[T, B, ...] -> [T, B, K]`` whose spiking layers are ``tks.snn.LIF`` modules.
        batches: ``(input, label)`` batches.
        encode: batch -> time-major input ``[T, B, ...]``.
        device: where to run.
        real_valued_input: the first conv/linear layer sees real values (direct encoding of images): count it as
            MACs. False for event frames (spike counts), whose first layer accumulates.
        max_batches: stop after this many batches.

    Returns:
        JSON-ready ``{"layers": [...], "ops": [...], "totals": {...}, "num_steps", "num_samples", "constants"}``;
        all counts are per sample.
    """
    model.eval()
    spikes: dict[str, dict[str, Any]] = {}
    ops: dict[str, dict[str, Any]] = {}
    repeat = {"steps": 1}  # > 1 while a TimeInvariant layer runs one step for T identical ones
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, LIF):
            handles.append(module.register_forward_hook(_spike_hook(name, spikes)))
        elif isinstance(module, nn.Conv2d | nn.Linear):
            handles.append(module.register_forward_hook(_op_hook(name, ops, repeat)))
        elif isinstance(module, TimeInvariant):
            handles.append(module.register_forward_pre_hook(_repeat_start(repeat)))
            handles.append(module.register_forward_hook(_repeat_end(repeat)))
    samples, steps = 0, 0
    try:
        for i, (x, _) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x_seq = encode(x.to(device))
            steps = x_seq.shape[0]
            samples += x_seq.shape[1]
            model(x_seq)
    finally:
        for handle in handles:
            handle.remove()
    if samples == 0:
        raise ValueError("no batches to measure")
    return _summarise(spikes, ops, samples, steps, real_valued_input)


def _spike_hook(name: str, store: dict[str, dict[str, Any]]) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        out = output.detach().float()  # [T, B, ...]
        entry = store.setdefault(name, {"neurons": out[0, 0].numel(), "per_step": 0.0, "fired": 0.0})
        entry["per_step"] = entry["per_step"] + out.flatten(2).sum((1, 2)).double().cpu()  # spikes per step
        entry["fired"] += (out.sum(0) > 0).double().sum().item()  # neuron-samples that fired at least once

    return hook


def _repeat_start(repeat: dict[str, int]) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0]
        repeat["steps"] = x.shape[0] if x.shape[0] > 1 and x.stride(0) == 0 else 1

    return hook


def _repeat_end(repeat: dict[str, int]) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        repeat["steps"] = 1

    return hook


def _op_hook(name: str, store: dict[str, dict[str, Any]], repeat: dict[str, int]) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        x = inputs[0].detach()
        entry = store.setdefault(name, {"type": type(module).__name__, "dense": 0, "input_sum": 0.0, "input_n": 0})
        entry["dense"] += dense_macs(module, output) * repeat["steps"]
        entry["input_sum"] += x.abs().double().sum().item()
        entry["input_n"] += x.numel()

    return hook


def _summarise(
    spikes: dict[str, dict[str, Any]], ops: dict[str, dict[str, Any]], samples: int, steps: int, real_first: bool
) -> dict[str, Any]:
    layers = []
    for name, entry in spikes.items():
        per_step = (entry["per_step"] / (samples * entry["neurons"])).tolist()
        layers.append(
            {
                "name": name,
                "neurons": entry["neurons"],
                "rate_per_step": per_step,
                "rate": sum(per_step) / len(per_step),
                "fired_fraction": entry["fired"] / (samples * entry["neurons"]),
                "spikes_per_sample": float(entry["per_step"].sum() / samples),
            }
        )
    op_rows, macs, acs, ann_macs = [], 0.0, 0.0, 0.0
    for i, (name, entry) in enumerate(ops.items()):  # hooks fire in execution order: the first is the input layer
        per_step = entry["dense"] / (samples * steps)
        input_mean = entry["input_sum"] / max(entry["input_n"], 1)
        is_mac = i == 0 and real_first
        count = per_step * steps if is_mac else per_step * input_mean * steps
        macs, acs, ann_macs = macs + (count if is_mac else 0.0), acs + (0.0 if is_mac else count), ann_macs + per_step
        op_rows.append(
            {
                "name": name,
                "type": entry["type"],
                "dense_macs": per_step,
                "input_mean": input_mean,
                "op": "MAC" if is_mac else "AC",
                "count": count,
            }
        )
    snn, ann = energy_pj(macs, acs), energy_pj(ann_macs, 0.0)
    total_spikes = sum(layer["spikes_per_sample"] for layer in layers)
    total_neurons = sum(layer["neurons"] for layer in layers)
    return {
        "layers": layers,
        "ops": op_rows,
        "totals": {
            "macs": macs,
            "acs": acs,
            "energy_uj": snn / 1e6,
            "ann_macs": ann_macs,
            "ann_energy_uj": ann / 1e6,
            "ann_over_snn": ann / snn if snn > 0 else float("inf"),
            "spikes_per_sample": total_spikes,
            "mean_rate": total_spikes / (total_neurons * steps) if total_neurons else 0.0,
        },
        "num_steps": steps,
        "num_samples": samples,
        "constants": {"e_mac_pj": E_MAC_PJ, "e_ac_pj": E_AC_PJ},
    }
