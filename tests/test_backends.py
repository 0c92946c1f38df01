"""The neuron backends' Python-side contracts (tks.snn.backends): the rule's printed table, the C kernel's build
(compiler, cache, error line), the memory layout both kernels read, and the custom operators' autograd edges.

The kernels' arithmetic is checked elsewhere (test_neuron.py, test_kernel_boundaries.py, test_triton_lif.py); these
tests check what decides which kernel runs, on which memory, and what a user sees when it cannot.
"""

import ctypes
import itertools
import shlex
import subprocess
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tks.snn import backends, choose_backend, lif_reference, make_surrogate
from tks.snn.backends import cpu_kernel, fused
from tks.snn.backends.layout import flat_time_major, time_major_layout

PQ2 = make_surrogate("piecewise_quadratic", 2.0)
needs_kernel = pytest.mark.skipif(cpu_kernel.load_lif_kernel() is None, reason="no C compiler: no CPU kernel")


# --- describe_backends: the table must say what choose_backend does ------------------------------------------------


def _table(text: str) -> dict[str, dict[str, str]]:
    """The device x dtype table of ``describe_backends``'s text, read back: {device: {dtype: backend}}."""
    lines = text.splitlines()
    header = lines[1].split()
    assert header[0] == "device"
    return {row.split()[0]: dict(zip(header[1:], row.split()[1:], strict=True)) for row in lines[2:5]}


@pytest.mark.parametrize("engine", ["tks", "autograd", "spikingjelly"])
def test_describe_backends_table_is_what_the_rule_picks(engine):
    atan = make_surrogate("atan", 3.0)
    text = backends.describe_backends(engine, atan)
    assert text.splitlines()[0] == (
        f"neuron backends for engine '{engine}', surrogate 'atan' (tks.snn.backends.choose_backend):"
    )
    table = _table(text)
    dtypes = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
    devices = {"cpu": "cpu", "cuda": "cuda", "other": "meta"}
    assert list(table) == list(devices) and all(list(row) == list(dtypes) for row in table.values())
    for (label, device), (name, dtype) in itertools.product(devices.items(), dtypes.items()):
        assert table[label][name] == choose_backend(torch.device(device), dtype, engine, atan), (label, name)
    assert all(line == line.rstrip() for line in text.splitlines())  # no trailing blanks of the padded columns
    assert text.splitlines()[5] == (
        "  engine 'autograd' or a surrogate of your own: autograd; engine 'spikingjelly': spikingjelly"
    )


def test_describe_backends_defaults_to_the_official_neuron():
    first = backends.describe_backends().splitlines()[0]
    assert (
        first == "neuron backends for engine 'tks', surrogate 'piecewise_quadratic' (tks.snn.backends.choose_backend):"
    )


def test_describe_backends_names_what_was_built_and_installed(monkeypatch):
    from importlib import metadata

    library = SimpleNamespace(_name="/cache/kernels/lif_cpu-x86_64-0123456789abcdef-omp.so")
    monkeypatch.setattr(cpu_kernel, "load_lif_kernel", lambda: library)
    monkeypatch.setattr(fused, "triton_kernels", lambda: SimpleNamespace(DTYPES=(torch.float32,)))
    monkeypatch.setattr(backends.spikingjelly, "version", lambda: "9.8.7")
    monkeypatch.setattr(metadata, "version", lambda name: {"triton": "1.2.3"}[name])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 5)
    tail = backends.describe_backends().splitlines()[6:]
    assert tail == [
        "  cpu_kernel: built, /cache/kernels/lif_cpu-x86_64-0123456789abcdef-omp.so; 5 threads",
        "  triton: triton 1.2.3",
        "  spikingjelly: SpikingJelly 9.8.7",
    ]
    monkeypatch.setattr(cpu_kernel, "load_lif_kernel", lambda: None)
    monkeypatch.setattr(fused, "triton_kernels", lambda: None)
    monkeypatch.setattr(backends.spikingjelly, "version", lambda: None)
    assert backends.describe_backends().splitlines()[6:] == [
        "  cpu_kernel: not built (see the warning)",
        "  triton: no triton",
        "  spikingjelly: not installed",
    ]
    monkeypatch.setenv("TKS_LIF_KERNEL", "0")
    assert backends.describe_backends().splitlines()[6:] == [
        "  cpu_kernel, triton: off (TKS_LIF_KERNEL=0)",
        "  spikingjelly: not installed",
    ]


def test_kernels_are_on_unless_the_variable_says_0(monkeypatch):
    for value, enabled in ((None, True), ("1", True), ("yes", True), ("", True), ("0", False)):
        if value is None:
            monkeypatch.delenv("TKS_LIF_KERNEL", raising=False)
        else:
            monkeypatch.setenv("TKS_LIF_KERNEL", value)
        assert backends._kernels_enabled() is enabled, value


# --- the C kernel's build: compiler, cache, one error line ---------------------------------------------------------


def test_cache_root_is_the_variable_else_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TKS_CACHE", str(tmp_path / "mine"))
    assert cpu_kernel.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("TKS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cpu_kernel.cache_root() == tmp_path / ".cache" / "tks"


def test_compiler_is_cc_else_pythons_compiler_else_cc(monkeypatch):
    config = {"CC": "gcc -pthread"}
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: config.get(name))
    monkeypatch.setenv("CC", "clang -O0")
    assert cpu_kernel._compiler() == ["clang", "-O0"]
    monkeypatch.delenv("CC")
    assert cpu_kernel._compiler() == ["gcc", "-pthread"]  # the compiler Python was built with
    config.clear()
    assert cpu_kernel._compiler() == ["cc"]


def _script(path: Path, body: str) -> list[str]:
    """An executable shell script at ``path``; the compiler command that runs it."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return [str(path)]


def test_compiler_version_is_the_first_line_of_dash_dash_version(tmp_path):
    fake = _script(tmp_path / "cc", '[ "$1" = --version ] && printf "fakecc 1.0\\nCopyright\\n" && exit 0\necho no\n')
    assert cpu_kernel._compiler_version(fake) == "fakecc 1.0"
    silent = _script(tmp_path / "silent", "exit 0\n")
    assert cpu_kernel._compiler_version(silent) == ""
    assert cpu_kernel._compiler_version([str(tmp_path / "missing")]) == ""  # does not run at all


def test_cache_key_names_the_machine_and_a_short_hash():
    assert cpu_kernel.cache_key(["cc"], "gcc 12", "x86_64").startswith("lif_cpu-x86_64-")
    key = cpu_kernel.cache_key(["cc"], "gcc 12", "")
    assert key.startswith("lif_cpu-unknown-")
    digest = key.rpartition("-")[2]
    assert len(digest) == 16 and int(digest, 16) >= 0


def test_build_passes_openmp_only_when_asked_and_keeps_the_compiler_quiet(tmp_path, capfd):
    calls = tmp_path / "calls.txt"
    # a "compiler" that notes its arguments, talks on both streams and writes the file after -o
    fake = _script(
        tmp_path / "cc",
        f'echo "$@" >> {shlex.quote(str(calls))}\necho chatter; echo warning: chatter >&2\n'
        'while [ "$1" != -o ]; do shift; done; echo lib > "$2"\n',
    )
    for openmp in (True, False):
        target = tmp_path / f"lib{int(openmp)}.so"
        cpu_kernel._build(target, fake, openmp)
        assert target.read_text() == "lib\n"
    with_omp, without = (line.split() for line in calls.read_text().splitlines())
    source = str(cpu_kernel.SOURCE)
    assert with_omp[:-3] == [*cpu_kernel.FLAGS, "-fopenmp", source] and with_omp[-3::2] == ["-o", "-lm"]
    assert without[:-3] == [*cpu_kernel.FLAGS, source] and without[-3::2] == ["-o", "-lm"]
    assert capfd.readouterr() == ("", "")  # the compiler's output is captured, not shown
    cpu_kernel._build(tmp_path / "lib1.so", fake, True)  # already there (another process built it): no call
    assert len(calls.read_text().splitlines()) == 2


@needs_kernel
def test_bound_functions_take_python_numbers():
    """A freshly opened library, bound by ``_bind``, runs forward and backward with Python ints and floats."""
    library = cpu_kernel._bind(ctypes.CDLL(cpu_kernel.load_lif_kernel()._name))
    x = torch.rand(3, 10, dtype=torch.float64) * 1.5
    spikes, h = torch.empty_like(x), torch.empty_like(x)
    library.lif_forward_f64(x.data_ptr(), spikes.data_ptr(), h.data_ptr(), 3, 10, 2.0, 0.5, 1)
    expected, _ = lif_reference(x, surrogate=PQ2)
    torch.testing.assert_close(spikes, expected, rtol=0, atol=0)
    grad, ones = torch.empty_like(x), torch.ones_like(x)
    library.lif_backward_f64(ones.data_ptr(), h.data_ptr(), grad.data_ptr(), 3, 10, 2.0, 0.5, 2.0, 0, 1, 1)
    expected_grad = cpu_kernel.lif_backward(ones, h, 2.0, 0.5, "piecewise_quadratic", 2.0, True)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


def test_compiler_failure_is_its_first_error_line():
    stderr = b"lif_cpu.c: In function 'f':\nlif_cpu.c:3:1: Error: expected ';'\n  note: here\n\xff bad byte error\n"
    failed = subprocess.CalledProcessError(1, ["/usr/bin/gcc", "-O3", "lif_cpu.c"], stderr=stderr)
    assert cpu_kernel._one_line(failed) == "/usr/bin/gcc exited with status 1: lif_cpu.c:3:1: Error: expected ';'"
    warned = subprocess.CalledProcessError(2, ["my cc"], stderr=b"\n  first line \nsecond\n")
    assert cpu_kernel._one_line(warned) == "'my cc' exited with status 2: first line"  # no error line: the first
    assert cpu_kernel._one_line(subprocess.CalledProcessError(3, ["cc"])) == "cc exited with status 3"
    missing = FileNotFoundError(2, "No such file or\n  directory", "cc")
    assert cpu_kernel._one_line(missing) == "[Errno 2] No such file or directory: 'cc'"
    long = subprocess.CalledProcessError(1, ["cc"], stderr=b"error: " + b"x" * 400)
    assert cpu_kernel._one_line(long) == ("cc exited with status 1: error: " + "x" * 400)[:300]
    assert cpu_kernel._one_line(OSError("y" * 400)) == "y" * 300


def test_unknown_surrogate_formula_is_refused_by_name():
    with pytest.raises(
        ValueError, match=r"CPU LIF kernel: unknown surrogate 'sigmoid'; it has \('piecewise_quadratic'"
    ):
        cpu_kernel.lif_backward(torch.zeros(2, 3), torch.zeros(2, 3), 2.0, 0.5, "sigmoid", 2.0, True)


# --- the layout both kernels read -------------------------------------------------------------------------------


def _dense_time_major(x: torch.Tensor) -> bool:
    """Brute force: each step's elements fill one gap-free block of memory, the blocks one after another."""
    offsets = torch.zeros(x.shape, dtype=torch.long)
    for dim, (size, stride) in enumerate(zip(x.shape, x.stride(), strict=True)):
        shape = [1] * x.dim()
        shape[dim] = size
        offsets = offsets + (torch.arange(size) * stride).view(shape)
    steps, per_step = x.shape[0], x[0].numel()
    if steps == 0 or per_step == 0:
        return True
    first = offsets[0].min()
    return all(
        sorted(offsets[t].flatten().tolist()) == list(range(first + t * per_step, first + (t + 1) * per_step))
        for t in range(steps)
    )


def _strided(size: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """A view of random numbers with this size and stride (``empty_strided`` would hold garbage, NaN included)."""
    span = 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else 0
    return torch.randn(span).as_strided(size, stride)


def _layouts():
    """Tensors [T, ...] in many memory layouts: dense, permuted, sliced, broadcast, odd strides of size-1 dims."""
    base = torch.randn(3, 2, 4, 5)
    yield "contiguous", base
    yield "channels_last", base.flatten(0, 0).contiguous(memory_format=torch.channels_last)
    yield "inner permuted", base.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    yield "time inside", base.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    yield "sliced steps", base[::2]
    yield "sliced inside", base[:, :, 1:3]
    yield "broadcast over T", base[:1].expand(3, 2, 4, 5)
    yield "broadcast inside", base[:, :1].expand(3, 2, 4, 5)
    yield "one step, far apart", _strided((1, 4, 5), (1000, 5, 1))
    yield "one step, not dense", _strided((1, 4, 5), (40, 10, 1))
    yield "size-1 dims, odd strides", _strided((3, 1, 4, 1, 5), (20, 999, 5, 7, 1))
    yield "size-2 dim with a gap", _strided((3, 2, 5), (20, 10, 1))
    yield "size-2 dims dense", _strided((3, 2, 2), (4, 1, 2))
    yield "a step of one element", _strided((4, 1), (1, 1))
    yield "steps overlapping", _strided((3, 4), (2, 1))
    yield "empty batch", torch.zeros(3, 0)
    yield "empty, odd strides", _strided((2, 0, 4), (1, 1, 1))


@pytest.mark.parametrize(("name", "x"), list(_layouts()), ids=[name for name, _ in _layouts()])
def test_flat_time_major_is_a_dense_block_per_step(name, x):
    assert flat_time_major(x) == _dense_time_major(x)
    y = time_major_layout(x)
    assert _dense_time_major(y) and torch.equal(y, x)
    assert (y is x) == flat_time_major(x)  # copied only when needed


def test_the_layouts_cover_both_answers():
    answers = {flat_time_major(x) for _, x in _layouts()}
    assert answers == {True, False}


# --- the custom operators' autograd edges -----------------------------------------------------------------------


def test_kernels_for_picks_the_module_of_the_device(monkeypatch):
    assert fused.kernels_for(torch.zeros(1)) is cpu_kernel
    assert fused.kernels_for(torch.zeros(1, device="meta")) is cpu_kernel
    cuda = SimpleNamespace(device=torch.device("cuda"))  # only the device type is read: no GPU needed
    triton = SimpleNamespace(name="triton kernels")
    monkeypatch.setattr(fused, "triton_kernels", lambda: triton)
    assert fused.kernels_for(cuda) is triton
    monkeypatch.setattr(fused, "triton_kernels", lambda: None)
    with pytest.raises(RuntimeError, match="^tks::lif_forward on CUDA tensors needs triton, which cannot be imported"):
        fused.kernels_for(cuda)


@needs_kernel
def test_an_operator_run_without_its_membrane_cannot_be_differentiated():
    x = torch.rand(3, 4, requires_grad=True)
    spikes, h = torch.ops.tks.lif_forward(x, 2.0, 0.5, "piecewise_quadratic", 2.0, True, False)
    assert h.numel() == 0
    with pytest.raises(RuntimeError, match="^tks::lif_forward ran with keep_membrane=False, so it cannot be differ"):
        spikes.sum().backward()


@needs_kernel
def test_a_loss_on_the_membrane_alone_gives_the_input_no_gradient():
    x = torch.rand(3, 4, requires_grad=True)
    w = torch.rand(3, 4, requires_grad=True)
    spikes, h = torch.ops.tks.lif_forward(x * w, 2.0, 0.5, "piecewise_quadratic", 2.0, True, True)
    (h.sum() + 0 * w.sum()).backward()  # the membrane is an output no gradient flows back through
    assert x.grad is None and torch.equal(w.grad, torch.zeros_like(w))


@needs_kernel
def test_inference_keeps_no_membrane(monkeypatch):
    seen = []
    real = fused.lif_forward

    def spy(x_seq, tau, v_threshold, surrogate, alpha, detach_reset, keep_membrane):
        seen.append(keep_membrane)
        return real(x_seq, tau, v_threshold, surrogate, alpha, detach_reset, keep_membrane)

    monkeypatch.setattr(fused, "lif_forward", spy)
    x = torch.rand(3, 4)
    fused.lif_fused(x, 2.0, 0.5, PQ2, True)  # grad mode on, but x needs no gradient
    with torch.no_grad():
        fused.lif_fused(x.requires_grad_(), 2.0, 0.5, PQ2, True)
    fused.lif_fused(x, 2.0, 0.5, PQ2, True)  # training: the backward pass reads H
    assert seen == [False, False, True]
