"""The autograd engine: graph shapes, accumulation, no_grad, memory freeing, deep graphs, dtypes."""
import ast
import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

import minisnn
from minisnn import Function, Tensor, no_grad
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


def test_tensor_rejects_non_arrays():
    with pytest.raises(TypeError):
        Tensor("not an array")


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
