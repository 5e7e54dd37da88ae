"""The autograd engine: graph shapes, accumulation, no_grad, memory freeing, deep graphs, dtypes."""
import ast
import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

import minisnn
from minisnn import Function, Tensor, no_grad
from minisnn.backend import get_array_module
from minisnn.functions import basic as F

PACKAGE = Path(minisnn.__file__).parent


def leaf(values):
    return Tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def test_diamond_graph_accumulates_both_paths():
    # y = (x*x) + (x*3):  dy/dx = 2x + 3, the two branches meet again at the add
    x = leaf([1.0, -2.0])
    a = x * x
    b = x * 3
    (a + b).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, -1.0])


def test_tensor_used_twice_in_one_op():
    x = leaf([3.0])
    (x * x).backward()
    np.testing.assert_array_equal(x.grad, [6.0])


@pytest.mark.parametrize("short_path_first", [False, True])
def test_an_intermediate_passes_its_gradient_on_only_after_every_path_has_delivered(short_path_first):
    # h = 2x reaches y by a long path (h*2*3) and a short one (+h): dy/dh = 6 + 1 = 7, dy/dx = 14.
    # Processing h's creator when only the short path has arrived would give dy/dx = 2.
    x = leaf([1.0, -3.0])
    h = x * 2
    y = (h + h * 2 * 3) if short_path_first else (h * 2 * 3 + h)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [14.0, 14.0])


def test_gradients_accumulate_across_backward_calls_until_cleared():
    x = leaf([1.0, 2.0])
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
    (x * x).sum().backward()  # another graph on the same leaf: its gradient 2x is added
    np.testing.assert_array_equal(x.grad, [4.0, 6.0])
    x.zero_grad()
    assert x.grad is None
    x.backward()  # a leaf as the root accumulates the same way
    x.backward(np.array([1.0, 5.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 6.0])


def test_the_root_keeps_its_own_gradient():
    x = leaf([1.0, 2.0])
    y = (x * 3).sum()
    y.backward()
    assert y.grad == 1.0 and x.grad.tolist() == [3.0, 3.0]
    z = x * 3
    z.backward(np.array([1.0, 10.0]))  # a given dL/dz is kept as z's gradient and used as the seed
    assert z.grad.tolist() == [1.0, 10.0] and x.grad.tolist() == [6.0, 33.0]
    with pytest.raises(ValueError, match="grad shape"):
        (x * 3).backward(np.ones(3))


def test_broadcasting_reduces_gradient_to_input_shape():
    x = leaf(np.ones((3, 1)))
    b = leaf(np.ones(4))
    (x * b + b).sum().backward()
    assert x.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_array_equal(x.grad, np.full((3, 1), 4.0))
    np.testing.assert_array_equal(b.grad, np.full(4, 6.0))  # 3 rows of x, plus 3 rows of +b


def test_no_grad_builds_no_graph():
    x = leaf([1.0])
    with no_grad():
        y = x * 2
    assert y.creator is None and not y.requires_grad
    assert (x * 2).creator is not None  # switched back on afterwards


def test_nested_no_grad_restores_each_level_even_after_an_error():
    x = leaf([1.0])
    with no_grad():
        with no_grad():
            pass
        assert (x * 2).creator is None  # leaving the inner block keeps the outer one's setting
        with pytest.raises(ZeroDivisionError):
            with no_grad():
                1 / 0
        assert (x * 2).creator is None
    assert (x * 2).creator is not None
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert (x * 2).creator is not None


def test_no_grad_in_one_thread_leaves_another_threads_graph_alone():
    import threading
    x, inside, leave, built = leaf([1.0]), threading.Event(), threading.Event(), []

    def evaluate():  # e.g. one simulated rank evaluating while another trains
        with no_grad():
            inside.set()
            leave.wait(10)
            built.append((x * 2).creator is not None)

    other = threading.Thread(target=evaluate)
    other.start()
    try:
        assert inside.wait(10)
        builds_here = (x * 2).creator is not None  # this thread still builds graphs
        with no_grad():  # and its own no_grad ends before the other thread's does
            pass
    finally:
        leave.set()
        other.join()
    assert builds_here and built == [False] and (x * 2).creator is not None


def test_inputs_without_requires_grad_build_no_graph():
    x = Tensor(np.ones(3))
    y = x * 2 + 1
    assert y.creator is None and not y.requires_grad


def test_deep_graph_of_ten_thousand_nodes_needs_no_recursion():
    x = leaf(np.array([1.0, 2.0]))
    y = x
    for _ in range(10_000):
        y = y * 1.0 + 0.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


def test_intermediate_gradients_are_freed_unless_retained():
    x = leaf([1.0, 2.0])
    h = x * 2
    (h * h).sum().backward()
    assert h.grad is None and x.grad is not None
    x = leaf([1.0, 2.0])
    h = x * 2
    (h * h).sum().backward(retain_grad=True)
    np.testing.assert_array_equal(h.grad, 2 * h.data)


def test_saved_arrays_are_released_after_backward():
    x = leaf(np.ones(5))
    y = F.exp(x)
    func = y.creator
    assert hasattr(func, "y")
    y.sum().backward()
    assert not hasattr(func, "y")
    with pytest.raises(RuntimeError, match="freed"):
        y.sum().backward()


def test_graph_is_garbage_collected_with_its_output():
    x = leaf(np.ones(5))
    y = x * 2
    ref = weakref.ref(y.creator)
    del y
    gc.collect()
    assert ref() is None


def test_python_scalars_do_not_promote_float32():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = (x * 2.5 + 1) / 3.0 - 0.5
    y = 1.0 - y ** 2
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_backward_checks_gradient_shapes_of_custom_functions():
    class BadShape(Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return gy.sum()

    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="shape"):
        BadShape()(x).sum().backward()


def test_multi_output_function_with_an_unused_output():
    class Split(Function):
        def forward(self, x):
            return x[:1].copy(), x[1:].copy()

        def backward(self, g0, g1):
            return np.concatenate([g0, g1])

    x = leaf([1.0, 2.0, 3.0])
    first, _ = Split()(x)
    (first * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 0.0])
    x.zero_grad()
    first, _ = Split()(x)
    (first * 3).sum().backward(np.array(2.0))  # a given seed: the zeros for the unused output come all the same
    np.testing.assert_array_equal(x.grad, [6.0, 0.0, 0.0])


def test_on_the_gpu_unused_outputs_and_raw_arrays_stay_on_the_device(gpu):
    class Split(Function):
        def forward(self, x):
            return x[:1].copy(), x[1:].copy()

        def backward(self, g0, g1):
            return gpu.concatenate([g0, g1])

    x = Tensor(gpu.asarray([1.0, 2.0, 3.0]), requires_grad=True)
    first, _ = Split()(x)
    (first * gpu.asarray([3.0])).sum().backward()  # a raw device array as an operand
    assert get_array_module(x.grad) is gpu
    assert gpu.asnumpy(x.grad).tolist() == [3.0, 0.0, 0.0]


def test_tensor_rejects_non_arrays_and_tensors():
    with pytest.raises(TypeError, match="must be a NumPy/CuPy array, got str"):
        Tensor("not an array")
    with pytest.raises(TypeError, match="already a Tensor"):
        Tensor(Tensor(np.ones(2)))


def test_tensor_surface():
    x = Tensor([[1.0, 2.0, 3.0]], requires_grad=True, name="w")
    assert isinstance(x.data, np.ndarray) and x.data.dtype == np.float64  # numbers and lists become arrays
    assert isinstance(Tensor(3.0).data, np.ndarray) and Tensor(3).item() == 3
    assert (x.shape, x.ndim, x.size, x.dtype, len(x), x.name) == ((1, 3), 2, 3, np.float64, 1, "w")
    assert x.generation == 0 and x.grad is None and x.creator is None
    assert repr(x) == "Tensor(array([[1., 2., 3.]]), requires_grad=True, name='w')"
    assert repr(Tensor(np.zeros(2))) == "Tensor(array([0., 0.]))"
    assert x.sum().item() == 6.0 and type(x.sum().item()) is float
    assert x.numpy() is x.data
    y = x * 2
    d = y.detach()
    assert d.creator is None and not d.requires_grad and d.data is y.data


def test_an_ndarray_on_the_left_still_builds_a_graph():
    x = leaf([1.0, 2.0])
    y = np.array([3.0, 4.0]) * x  # ndarray.__mul__ defers to Tensor.__rmul__
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_operations_on_plain_numbers_and_lists_give_tensors():
    assert F.mul(2.0, 3.0).item() == 6.0
    y = F.add([1.0, 2.0], 0.5)
    assert isinstance(y, Tensor) and y.data.tolist() == [1.5, 2.5] and y.dtype == np.float64
    z = F.add(Tensor(np.ones(2, np.float32)), [1.0, 2.0])  # a list keeps its own (float64) dtype
    assert z.dtype == np.float64


def test_a_function_without_forward_or_backward_says_so():
    class NoForward(Function):
        pass

    class NoBackward(Function):
        def forward(self, x):
            return x * 2

    with pytest.raises(NotImplementedError):
        NoForward()(leaf([1.0]))
    with pytest.raises(NotImplementedError, match="NoBackward has no backward"):
        NoBackward()(leaf([1.0])).sum().backward()


def test_backward_checks_the_number_of_gradients_of_custom_functions():
    class TwoGradients(Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return 2 * gy, 2 * gy

    with pytest.raises(RuntimeError, match="returned 2 gradients for 1 inputs"):
        TwoGradients()(leaf([1.0, 2.0])).sum().backward()


def test_intermediate_tensors_are_freed_as_soon_as_their_gradient_has_been_used():
    seen_alive = []

    class Probe(Function):  # the identity; its backward runs last and looks at the tensors made after it
        def forward(self, x):
            return x

        def backward(self, gy):
            seen_alive.append([ref() is not None for ref in refs])
            return gy

    x = leaf([1.0, 2.0])
    a = Probe()(x) * 2
    b = a * 3
    c = b * 4
    refs = [weakref.ref(b), weakref.ref(c)]  # (a, just used, may still be held by the loop for one step)
    loss = c.sum()
    del a, b, c
    loss.backward()
    assert seen_alive == [[False, False]]
    np.testing.assert_array_equal(x.grad, [24.0, 24.0])




def test_only_backend_imports_cupy():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "backend.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "cupy" for name in names):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders, f"cupy imported outside minisnn/backend.py: {offenders}"


def package_imports():
    """{module: set of minisnn modules it imports}, read from the source with ast (relative imports resolved;
    ``from package import name`` counts as importing the submodule when ``name`` is one)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_package_import_graph_has_no_cycle():
    graph, state, path = package_imports(), {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert "minisnn.functions.basic" not in graph["minisnn.core"]  # Tensor's operators are bound the other way
