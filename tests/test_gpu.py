"""The GPU path, run on the ``gpu`` fixture: real CuPy where a GPU works, else the strict CPU stand-in
(tests/fakecupy), which refuses implicit host conversions, counts synchronisations and kernel launches
and runs the CUDA kernels' source as host C++.

Every CUDA version of a Function, kernel and optimizer is compared with its reference on the CPU; then
whole training steps are, and the step's budget is checked: no synchronisation, no implicit transfer,
no float64 array on the float32 path, and at most 1,000 kernel launches for ResNet-19 at T = 2.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from minisnn import Tensor, backend
from minisnn.backend import DeviceError, to_device, xp_for
from minisnn.fast import parallel, version_of
from minisnn.fast.conv import CUDAConv2d, col2im_cuda, im2col_cuda
from minisnn.fast.neuron import FusedLIF
from minisnn.fast.norm import FusedBatchNorm
from minisnn.fast.optim import FusedAdam, FusedSGD
from minisnn.functions.conv import Conv2d, col2im, im2col
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.functions.neuron import LIF
from minisnn.functions.norm import BatchNormFunction
from minisnn.functions.surrogate import SURROGATES, get_surrogate
from minisnn.models import resnet19, resnet_small
from minisnn.monitor import FiringRates
from minisnn.optim import SGD, Adam
from strategies import conv_cases, norm_cases, seeds

FUSED = [name for name in SURROGATES if get_surrogate(name).cuda_grad() is not None]
# the gpu fixture (the array module) is the same for every example: nothing in it is reset between them
EXAMPLES = settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])


def host(a):
    """A device array's values on the host (a synchronisation, outside the step under test)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def run(function, inputs, gy, needs=None):
    """Forward and backward of one Function: (output, input gradients) as host arrays."""
    needs = needs or [True] * len(inputs)
    tensors = [Tensor(a, requires_grad=n) for a, n in zip(inputs, needs)]
    y = function(*tensors)
    y.backward(gy)
    return host(y.data), [None if t.grad is None else host(t.grad) for t in tensors]


# ------------------------------------------------------------------------- the stand-in itself
def test_stand_in_refuses_what_cupy_refuses(stand_in):
    cp = stand_in
    a = cp.arange(6, dtype=cp.float32)
    for implicit in (lambda: np.asarray(a), lambda: a + np.ones(6, np.float32), lambda: cp.add(a, np.ones(6)),
                     lambda: a.__setitem__(slice(None), np.zeros(6))):
        with pytest.raises(TypeError):
            implicit()
    assert not isinstance(a, np.ndarray) and type(a).__module__ == "cupy"
    with pytest.raises(AttributeError, match="no attribute"):
        cp.not_a_cupy_function
    with cp.cuda.Device(1):
        with pytest.raises(ValueError, match="different from the current device"):
            a + 1
    cp.reset_counters()
    float(a.sum())
    assert len(cp.counters.syncs) == 1 and "test_gpu.py" in cp.counters.syncs[0]
    with cp.strict(), pytest.raises(cp.SyncError, match="int()"):
        int(a[0])


def test_a_host_conversion_inside_a_function_fails_in_strict_mode(stand_in):
    """What catches a planted float(x) or np.asarray(x) in a Function: the strict stand-in."""
    class Planted(LIF):
        def forward(self, x):
            float(x.max())                     # the kind of line that would stall a real GPU every step
            return super().forward(x)

    x = Tensor(stand_in.ones((2, 3), dtype=stand_in.float32))
    with stand_in.strict(), pytest.raises(stand_in.SyncError, match="float"):
        Planted()(x)


# --------------------------------------------------------------------------------------- conv
@EXAMPLES
@given(conv_cases(max_batch=3), seeds)
def test_cuda_im2col_and_col2im_equal_the_reference_bit_for_bit(gpu, case, seed):
    x, W, _, stride, padding = case
    kh, kw = W.shape[2:]
    cols = im2col(x, kh, kw, stride, padding)
    np.testing.assert_array_equal(host(im2col_cuda(gpu.asarray(x), kh, kw, stride, padding)), cols)
    c = np.random.default_rng(seed).standard_normal(cols.shape)
    out = gpu.empty(x.shape, dtype=x.dtype)
    col2im_cuda(gpu.asarray(c), x.shape, kh, kw, stride, padding, out=out)
    np.testing.assert_array_equal(host(out), col2im(c, x.shape, kh, kw, stride, padding))


@EXAMPLES
@given(conv_cases(max_batch=4), st.booleans(), st.booleans(), st.sampled_from([None, 1]), seeds)
def test_cuda_conv_equals_the_reference(gpu, monkeypatch, case, bias, need_dx, chunk_mb, seed):
    """Also in chunks of one sample each (a 1-byte budget), as a batch too large for the GPU runs."""
    x, W, b, stride, padding = case
    inputs = (x, W, b) if bias else (x, W)
    gy = np.random.default_rng(seed).standard_normal(Conv2d(stride, padding).forward(*inputs).shape)
    needs = [need_dx] + [True] * (len(inputs) - 1)
    want = run(Conv2d(stride, padding), inputs, gy, needs)
    with monkeypatch.context() as m:
        if chunk_mb:
            m.setattr(parallel, "gpu_chunk_bytes", lambda cp: 1)
        got = run(CUDAConv2d(stride, padding), [gpu.asarray(a) for a in inputs], gpu.asarray(gy), needs)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12)
    for g, w in zip(got[1], want[1]):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_gpu_chunk_budget_from_the_environment(gpu, monkeypatch):
    monkeypatch.setenv(parallel.GPU_CHUNK_ENV_VAR, "3")
    assert parallel.gpu_chunk_bytes(gpu) == 3 << 20
    assert [s.stop - s.start for s in parallel.gpu_chunks(10, 7 << 20, gpu)] == [3, 3, 4]
    monkeypatch.setenv(parallel.GPU_CHUNK_ENV_VAR, "0")
    with pytest.raises(ValueError, match="MINISNN_GPU_CHUNK_MB"):
        parallel.gpu_chunk_bytes(gpu)


# ----------------------------------------------------------------------------------------- LIF
def lif_inputs(v_th, surrogate, dtype, rng):
    """Currents around threshold, with some membranes exactly at V_th (after one step from rest: u[0] = x[0])
    and exactly at the surrogate window's edges u = V_th +- a/2, where > and >= or < and <= differ."""
    x = rng.normal(0.4, 0.6, size=(6, 7, 3, 5)).astype(dtype)
    flat = x[0].reshape(-1)
    edges = [v_th]
    if hasattr(surrogate, "a"):
        edges += [v_th - surrogate.a / 2, v_th + surrogate.a / 2, v_th - surrogate.a, v_th + surrogate.a]
    flat[:len(edges)] = np.array(edges, dtype=dtype)
    return x


@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("name, params, dtype", [(n, p, d) for n in FUSED for p, d in (
    ("default", np.float32), ("default", np.float64), ("wide", np.float64), ("narrow", np.float64))])
def test_fused_lif_kernels_equal_the_reference(gpu, name, params, dtype, detach_reset):
    """The kernels' source (run as host C++ on the stand-in) against the reference loop, bit for bit in
    spikes and membranes, over surrogate parameters away from the defaults (where a = 1/a would hide a
    swapped height and width) and with membranes exactly at V_th and at the window's edges."""
    key = {"rectangular": "a", "triangle": "a", "sigmoid": "k", "atan": "alpha"}[name]
    value = {"wide": {"a": 2.5, "k": 9.0, "alpha": 4.0}, "narrow": {"a": 0.3, "k": 1.5, "alpha": 0.5}}
    surrogate = get_surrogate(name, **({} if params == "default" else {key: value[params][key]}))
    v_th, tau = 0.5, 0.3
    rng = np.random.default_rng(5)
    x = lif_inputs(v_th, surrogate, dtype, rng)
    gy = rng.standard_normal(x.shape).astype(dtype)
    reference = LIF(v_th, tau, surrogate, detach_reset)
    y_ref, (g_ref,) = run(reference, (x,), gy)
    saved = LIF(v_th, tau, surrogate, detach_reset)
    saved.forward(x)                                  # the reference's u and o (backward releases them)
    fused = FusedLIF(v_th, tau, surrogate, detach_reset)
    t = Tensor(gpu.asarray(x), requires_grad=True)
    y = fused(t)
    assert fused.fused, "float32/float64 CuPy input with a surrogate that has CUDA source takes the kernels"
    u, o = host(fused.u), host(fused.o)
    y.backward(gpu.asarray(gy))
    np.testing.assert_array_equal(host(y.data), y_ref)
    np.testing.assert_array_equal(o, saved.o)
    np.testing.assert_array_equal(u, saved.u)
    assert 0 < o.mean() < 1
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host(t.grad), g_ref, rtol=tol, atol=tol)


def test_fused_lif_runs_the_reference_for_float16_and_smooth_spikes(gpu):
    for dtype, surrogate in ((np.float16, "rectangular"), (np.float32, "smooth_sigmoid")):
        x = gpu.asarray(np.linspace(0, 1, 12, dtype=dtype).reshape(3, 4))
        fn = FusedLIF(surrogate=surrogate)
        y = fn(Tensor(x))
        assert not fn.fused and y.dtype == dtype


@pytest.mark.parametrize("name, param", [("rectangular", {"a": 1e-320}), ("atan", {"alpha": 1.5e308}),
                                         ("triangle", {"a": 1e-310})])
def test_surrogate_parameters_whose_constants_overflow_are_refused(name, param):
    with pytest.raises(ValueError, match="no float can hold"):
        get_surrogate(name, **param)


# ---------------------------------------------------------------------------------- batch norm
@EXAMPLES
@given(norm_cases(), st.booleans(), st.floats(0.2, 1.5), seeds)
def test_fused_batch_norm_equals_the_reference(gpu, case, training, scale, seed):
    x, w, b, rng = case
    folded = x.reshape((-1,) + x.shape[2:])
    C = x.shape[2]
    stats = rng.standard_normal(C), rng.uniform(0.2, 3, C)
    gy = np.random.default_rng(seed).standard_normal(folded.shape)
    running = [s.copy() for s in stats]
    want = run(BatchNormFunction(*running, training, scale), (folded, w, b), gy)
    device_running = [gpu.asarray(s) for s in stats]
    got = run(FusedBatchNorm(*device_running, training, scale), [gpu.asarray(a) for a in (folded, w, b)],
              gpu.asarray(gy))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-10)
    for g, w_ in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w_, rtol=1e-9, atol=1e-9)
    for g, w_ in zip(device_running, running):
        np.testing.assert_allclose(host(g), w_, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("make", [lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
                                  lambda p: SGD(p, lr=0.05, momentum=0.0, weight_decay=0.0),
                                  lambda p: Adam(p, lr=1e-2, weight_decay=1e-4)], ids=["sgd", "sgd-plain", "adam"])
def test_fused_optimizers_equal_the_reference_bit_for_bit(gpu, make):
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (5,))]
    grads = [[rng.standard_normal(v.shape).astype(np.float32) for v in values] for _ in range(3)]
    results = []
    for to in (np.asarray, gpu.asarray):
        params = [Tensor(to(v.copy()), requires_grad=True) for v in values]
        optimizer = make(params)
        optimizer = version_of(type(optimizer), params[0].data)(params, **optimizer_args(optimizer))
        for step in grads:
            for p, g in zip(params, step):
                p.grad = to(g)
            optimizer.step()
        results.append(([host(p.data) for p in params], int(host(optimizer.nonfinite()))))
        assert isinstance(optimizer, (FusedSGD, FusedAdam)) == (to is gpu.asarray)
    assert results[1][1] == results[0][1] == 0
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)


def optimizer_args(optimizer):
    if isinstance(optimizer, Adam):
        return dict(lr=optimizer.lr, betas=(optimizer.beta1, optimizer.beta2), eps=optimizer.eps,
                    weight_decay=optimizer.weight_decay)
    return dict(lr=optimizer.lr, momentum=optimizer.momentum, weight_decay=optimizer.weight_decay)


def test_fused_optimizer_flags_a_parameter_that_is_not_finite(gpu):
    p = Tensor(gpu.asarray(np.ones(4, np.float32)), requires_grad=True)
    optimizer = FusedSGD([p], lr=0.1, momentum=0.0)  # no velocity to carry the inf into the next step
    p.grad = gpu.asarray(np.array([0, 0, np.inf, 0], np.float32))
    optimizer.step()
    assert int(host(optimizer.nonfinite())) == 1
    p.data = gpu.asarray(np.ones(4, np.float32))
    p.grad = gpu.asarray(np.zeros(4, np.float32))
    optimizer.step()
    assert int(host(optimizer.nonfinite())) == 0


def test_optimizer_state_follows_the_model_to_the_gpu_and_back(gpu):
    model = resnet_small(T=2, width=4, blocks=(1,), seed=0)
    x, y = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32), np.array([1, 3])
    for optimizer in (SGD(model.parameters(), lr=0.1), Adam(model.parameters(), lr=1e-3)):
        for device, xp in (("cpu", np), ("cuda", gpu), ("cpu", np)):
            model.to(device)
            optimizer.zero_grad()
            softmax_cross_entropy(model(Tensor(xp.asarray(x))), xp.asarray(y)).backward()
            optimizer.step()                      # slots made on one device, used on the next
        for name in optimizer.slot_names():
            assert all(isinstance(s, np.ndarray) for s in getattr(optimizer, name) if s is not None)


def test_to_device_copies_between_gpus(gpu):
    if backend.cupy().cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    a = to_device(np.arange(3.0), "cuda:0")
    b = to_device(a, "cuda:1")
    assert b.device.id == 1 and a.device.id == 0
    np.testing.assert_array_equal(host(b), [0, 1, 2])
    xp_for("cuda:0")


# --------------------------------------------------------------------------------- whole steps
def train_step(model, optimizer, x, y):
    """One step as the trainer takes it; returns the loss tensor."""
    loss = softmax_cross_entropy(model(Tensor(x)), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


@pytest.mark.parametrize("build, steps", [(lambda: resnet_small(T=2, width=4, blocks=(1, 1), fc_hidden=6, seed=1), 2),
                                          (lambda: resnet19(T=2, seed=1), 1)], ids=["resnet_small", "resnet19"])
def test_a_training_step_on_the_gpu_equals_the_cpu_step(gpu, build, steps):
    """float64, so that rounding differences stay far below any membrane's distance from V_th."""
    rng = np.random.default_rng(2)
    x, y = rng.random((2, 3, 8, 8)), np.array([3, 7])
    results = []
    for device, xp in (("cpu", np), ("cuda", gpu)):
        model = build().astype(np.float64).to(device)
        params = model.parameters()
        optimizer = version_of(SGD, params[0].data)(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
        for _ in range(steps):
            loss = train_step(model, optimizer, xp.asarray(x), xp.asarray(y))
        results.append((float(host(loss.data)), model.state_dict()))
    (loss_cpu, state_cpu), (loss_gpu, state_gpu) = results
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-10)
    for name in state_cpu:
        np.testing.assert_allclose(state_gpu[name], state_cpu[name], rtol=1e-9, atol=1e-11, err_msg=name)


def test_resnet19_step_budget(stand_in):
    """ResNet-19, T = 2, float32: at most 1,000 kernel launches per training step (forward, backward,
    update, and the step's figures: loss, correct answers, mean firing rate and the non-finite flag,
    gathered on the device for one read), no synchronisation and no host-to-device copy besides the
    batch, and no float64 array."""
    cp = stand_in
    model = resnet19(T=2, seed=0).to("cuda")
    params = model.parameters()
    optimizer = version_of(SGD, params[0].data)(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    images, labels = rng.random((2, 3, 8, 8), dtype=np.float32), np.array([1, 2])
    with FiringRates(model) as rates:
        for step in range(2):                       # the second step is the steady state
            cp.reset_counters()
            x, y = cp.asarray(images), cp.asarray(labels)
            with cp.strict():
                logits = model(Tensor(x))
                loss = softmax_cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                figures = cp.stack([loss.data, (logits.data.argmax(axis=1) == y).sum().astype(cp.float32),
                                    rates.mean(), optimizer.nonfinite().astype(cp.float32)])
            launches, transfers, dtypes = cp.counters.launches, cp.counters.host_to_device, set(cp.counters.dtypes)
            host(figures)                           # the step's one synchronisation
    assert launches <= 1000, f"{launches} kernel launches in one ResNet-19 training step"
    assert transfers == 2, "only the batch's images and labels go to the device"
    assert np.dtype(np.float64) not in dtypes
    print(f"ResNet-19 T=2 training step: {launches} kernel launches")


# --------------------------------------------------------------------------- install and diagnosis
def test_a_gpu_that_cannot_compile_kernels_is_a_device_error_naming_the_fix(stand_in, monkeypatch):
    """CuPy 14 compiles every kernel at run time; without CUDA headers the first kernel fails. That is
    found when the device is chosen, and reported with the fix."""
    def no_headers(*args, **kwargs):
        raise RuntimeError("Failed to find CUDA headers")
    monkeypatch.setattr(stand_in, "arange", no_headers)
    monkeypatch.setattr(backend, "_smoke_tested", set())
    with pytest.raises(DeviceError, match=r"Failed to find CUDA headers.*cupy-cuda12x\[ctk\].*--device cpu"):
        xp_for("cuda")


def test_doctor_reports_versions_the_device_and_the_smoke_test(gpu, monkeypatch):
    from minisnn import doctor
    monkeypatch.setattr(backend, "_smoke_tested", set())
    lines, ok = doctor.report()
    text = "\n".join(lines)
    assert ok and "NumPy" in text and "BLAS" in text and "CuPy" in text
    assert "cuda:0" in text and "a kernel and a matrix product ran" in text


def test_bench_on_the_gpu_names_the_device_and_reports_the_pool(gpu):
    from minisnn import bench
    row = bench.measure_step("resnet_small", T=1, batch=2, steps=1, warmup=1, device="cuda",
                             model_args={"width": 4, "blocks": (1,)}, gemm_size=64)
    assert row["device"] == "cuda:0" and row["device_name"] and row["device_pool_mb"] > 0
    assert "resnet_small" in bench.table([row])


def test_gpu_check_script_parses_and_its_training_steps_run_on_the_gpu(gpu, capsys):
    """benchmarks/gpu_check.sh needs a real GPU to run whole; its shell parses here, and its Python
    part -- training steps on the CIFAR-10 sample -- runs on this fixture's device."""
    import importlib.util
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run(["bash", "-n", str(root / "benchmarks" / "gpu_check.sh")]).returncode == 0
    spec = importlib.util.spec_from_file_location("gpu_steps", root / "benchmarks" / "gpu_steps.py")
    gpu_steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_steps)
    code = gpu_steps.main(["--device", "cuda", "--model", "resnet_small", "--width", "4", "--steps", "3",
                           "--batch", "4"])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = __import__("json").loads(lines[-1])
    assert len(lines) == 4 and summary["device"] == "cuda:0" and summary["device_name"]
    assert code == (0 if summary["loss_fell"] else 1)


# ------------------------------------------------------------------- runs, checkpoints and exports
def cli_run(*args):
    from minisnn.cli import main
    return main([str(a) for a in args])


def test_a_run_trains_evaluates_and_resumes_on_the_gpu_and_its_checkpoints_cross_devices(gpu, cifar_sample, tmp_path,
                                                                                          capsys):
    """Through the CLI as a user runs it: train on cuda, extend it with --resume on cuda, evaluate the
    CUDA checkpoint on the CPU; train the same run on the CPU and evaluate that checkpoint on cuda. The
    two runs agree to float32 rounding and every evaluation gives the run's own accuracy."""
    from minisnn.checkpoint import load_checkpoint
    common = ["--dataset", "cifar10", "--data-dir", cifar_sample, "--model", "resnet_small", "--width", 4,
              "--blocks", 1, 1, "-T", 2, "--batch-size", 8, "--limit-train", 16, "--limit-test", 16,
              "--optimizer", "adam", "--lr", 0.01, "--no-progress"]
    runs = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        assert cli_run("train", *common, "--epochs", 1, "--device", device, "--out", out) == 0
        assert cli_run("train", "--resume", "--epochs", 2, "--device", device, "--out", out) == 0
        runs[device] = load_checkpoint(out / "last.npz")
    capsys.readouterr()
    gpu_run, cpu_run = runs["cuda"], runs["cpu"]
    assert gpu_run["meta"]["epoch"] == cpu_run["meta"]["epoch"] == 2
    for name, value in cpu_run["model"].items():
        np.testing.assert_allclose(gpu_run["model"][name], value, rtol=1e-3, atol=1e-4, err_msg=name)
    for trained, other in (("cuda", "cpu"), ("cpu", "cuda")):
        assert cli_run("eval", tmp_path / trained / "last.npz", "--device", other, "--out", tmp_path / f"eval_{trained}") == 0
        printed = capsys.readouterr().out
        accuracy = runs[trained]["meta"]["history"][-1]["test_acc"]
        assert f"accuracy {accuracy:.4f}" in printed, printed


def test_fold_and_nir_export_of_a_model_on_the_gpu(gpu, tmp_path):
    pytest.importorskip("nir", reason="NIR export needs the nir extra: pip install -e '.[nir]'")
    from minisnn.fold import fold_tdbn
    from minisnn.nir_export import export_nir, from_nir
    model = resnet_small(num_classes=4, T=2, width=4, blocks=(1, 1), seed=3)
    x = np.random.default_rng(4).random((2, 3, 8, 8), dtype=np.float32)
    model(Tensor(x))                                   # running statistics that are not the initial ones
    model.eval()
    folded_cpu = fold_tdbn(model)
    folded_gpu = fold_tdbn(model.to("cuda"))
    want = folded_cpu(Tensor(x)).data
    got = host(folded_gpu(Tensor(gpu.asarray(x))).data)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    export_nir(model, (3, 8, 8), tmp_path / "gpu.nir")
    export_nir(model.to("cpu"), (3, 8, 8), tmp_path / "cpu.nir")
    again = from_nir(tmp_path / "gpu.nir", T=2)
    np.testing.assert_array_equal(again(Tensor(x)).data, from_nir(tmp_path / "cpu.nir", T=2)(Tensor(x)).data)
