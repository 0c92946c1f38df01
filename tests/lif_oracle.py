"""The fused kernels' operation order written out in PyTorch ops: the bit-exact oracle of tests/test_neuron.py and
tests/test_triton_lif.py.

The package states the LIF once (``tks.snn.lif.lif_step``). With the reset detached, autograd through that step
equals the kernels bit for bit; with the reset not detached, autograd sums the reset's gradient in another order
(a difference of one rounding), so these two functions transcribe the kernels' order of ``lif_cpu.c``:
``dL/dH_t = dL/dS_t g' + G_t dV_t/dH_t`` with ``dV_t/dH_t = [H_t <= V_th] - H_t g'`` computed first.
"""

import torch
from torch import Tensor


def oracle_forward(x_seq: Tensor, tau: float, v_threshold: float) -> tuple[Tensor, Tensor]:
    """Spikes and the pre-spike membrane H for inputs ``[T, ...]``, in the kernels' operation order."""
    h_seq = torch.empty_like(x_seq)
    v = torch.zeros_like(x_seq[0])
    for t in range(x_seq.shape[0]):
        h_t = torch.add(v, (x_seq[t] - v) / tau, out=h_seq[t])  # V + (I - V) / tau
        v = h_t.masked_fill(h_t > v_threshold, 0.0)
    return (h_seq > v_threshold).to(x_seq.dtype), h_seq


def oracle_backward(
    grad_spikes: Tensor, h_seq: Tensor, tau: float, v_threshold: float, surrogate, detach_reset: bool
) -> Tensor:
    """Gradient of the inputs from the spikes' gradient and H, in the kernels' operation order."""
    surrogate_grad = surrogate.derivative(h_seq - v_threshold)
    dv_dh = (h_seq <= v_threshold).to(h_seq.dtype)
    if not detach_reset:
        dv_dh = dv_dh - h_seq * surrogate_grad
    direct = grad_spikes * surrogate_grad  # the path through S_t, for all steps at once
    grad_x = torch.empty_like(h_seq)
    carry = torch.zeros_like(h_seq[0])  # G_t: what V_t receives from step t + 1
    for t in range(h_seq.shape[0] - 1, -1, -1):
        grad_h = direct[t] + carry * dv_dh[t]
        torch.div(grad_h, tau, out=grad_x[t])
        carry = grad_h - grad_h / tau  # dH_{t+1}/dV_t = 1 - 1/tau
    return grad_x
