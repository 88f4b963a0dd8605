"""The .tfir text format: exact round trips and precise parse errors."""

import numpy as np
import pytest
import ml_dtypes

from tensorforge.ir import DType, Graph, Layout, Module, ParseError, QuantParams, TensorType
from tensorforge.ir.text import parse_module, print_module


def roundtrip(m: Module) -> str:
    text = print_module(m)
    again = print_module(parse_module(text))
    assert again == text
    return text


EXAMPLE = """\
module {producer="tensorforge 0.1.0", source="test"}
graph @main(%x: f32[batch,4], %q: i8[2,3] quant<scale=[0.5, 0.25], zero_point=[0, 1], axis=0, narrow_range=true> layout<_,model>) -> (f32[batch,2]) {
  %w = constant {value=dense<f32[4,2]: [1.0, -2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]>} : f32[4,2]  scope="dense"
  %0 = matmul(%x, %w) : f32[batch,2]  scope="dense" loc="keras:Dense"
  %1 = leaky_relu(%0) {alpha=0.1} : f32[batch,2]  scope="dense/act"
  return %1
}
"""


def test_example_roundtrips_exactly():
    m = parse_module(EXAMPLE)
    assert print_module(m) == EXAMPLE
    g = m.main
    assert m.metadata == {"producer": "tensorforge 0.1.0", "source": "test"}
    assert g.inputs[1].quant == QuantParams((0.5, 0.25), (0, 1), 0, 8, True, True)
    assert g.inputs[1].layout == Layout((None, "model"))
    node = g.first.next
    assert (node.op, node.scope, node.loc) == ("matmul", "dense", "keras:Dense")


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, ml_dtypes.bfloat16,
                                   np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_,
                                   ml_dtypes.int4])
@pytest.mark.parametrize("size", [0, 1, 5, 17, 300])
def test_constants_roundtrip_bit_exactly(dtype, size):
    rng = np.random.default_rng(size)
    if np.dtype(dtype).kind == "f" or dtype is ml_dtypes.bfloat16:
        arr = (rng.standard_normal(size) * 1e3).astype(dtype)
        if size > 3:
            arr[:3] = np.array([np.inf, -0.0, np.nan]).astype(dtype)
    elif dtype is np.bool_:
        arr = rng.integers(0, 2, size).astype(bool)
    else:
        info = np.iinfo(np.int8) if dtype is ml_dtypes.int4 else np.iinfo(dtype)
        lo, hi = (-8, 8) if dtype is ml_dtypes.int4 else (info.min, info.max)
        arr = rng.integers(lo, hi, size).astype(dtype)
    g = Graph()
    c = g.constant(arr, "c")
    g.set_outputs([c])
    text = roundtrip(Module([g]))
    back = parse_module(text).main.outputs[0].const
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


def test_splat_and_negative_zero_splat():
    g = Graph()
    a = g.constant(np.full((4, 8), 0.5, np.float32))
    b = g.constant(np.full((40,), -0.0, np.float32))
    g.set_outputs([a, b])
    text = roundtrip(Module([g]))
    assert "splat 0.5" in text
    back = parse_module(text).main.outputs[1].const
    assert np.signbit(back).all()


def test_names_made_unique_and_numbering_stable():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2,)), "x")
    a = g.add("neg", [x], names=["x"]).output  # clashes with the input
    b = g.add("neg", [a], names=["7"]).output  # numeric names print as numbers
    c = g.add("add", [a, b], names=["weird name!"]).output
    g.set_outputs([c])
    text = roundtrip(Module([g]))
    assert "%x_1 = neg(%x)" in text
    assert "%0 = neg(%x_1)" in text
    assert '%"weird name!" = add(%x_1, %0)' in text


def test_multi_result_and_multiple_graphs():
    text = """\
graph @main(%x: f32[4,6]) -> (f32[4,2], f32[4,4]) {
  %0, %1 = split(%x) {axis=1, sizes=[2, 4]} : f32[4,2], f32[4,4]
  return %0, %1
}
graph @other() -> () {
  return
}
"""
    m = parse_module(text)
    assert print_module(m) == text
    assert list(m.graphs) == ["main", "other"]


def parse_error(text) -> str:
    with pytest.raises(ParseError) as info:
        parse_module(text, "bad.tfir")
    return str(info.value)


def test_truncated_input():
    cut = EXAMPLE[: EXAMPLE.index("%1 = leaky")]
    msg = parse_error(cut)
    assert "bad.tfir:5:3: unexpected end of input inside graph @main" in msg


@pytest.mark.parametrize("n", range(0, len(EXAMPLE), 7))
def test_every_truncation_is_a_clean_error(n):
    with pytest.raises(ParseError):
        parse_module(EXAMPLE[:n], "cut.tfir")


def test_wrong_dtype_and_unknown_op_all_reported():
    msg = parse_error("""graph @main(%x: f33[2]) -> (f32[2]) {
  %0 = relux(%x) : f32[2]
  return %0
}""")
    assert "bad.tfir:1:17: unknown dtype 'f33'" in msg


def test_unknown_op_suggests():
    msg = parse_error("""graph @main(%x: f32[2]) -> (f32[2]) {
  %0 = relux(%x) : f32[2]
  %1 = sigmoidd(%0) : f32[2]
  return %1
}""")
    assert "bad.tfir:2:8: unknown op 'relux' (did you mean relu" in msg
    assert "bad.tfir:3:8: unknown op 'sigmoidd'" in msg
    assert "2 problems" in msg


def test_undefined_value():
    msg = parse_error("""graph @main(%x: f32[2]) -> (f32[2]) {
  %0 = relu(%y) : f32[2]
  return %0
}""")
    assert "bad.tfir:2:13: use of undefined value %y" in msg


def test_cycle_is_named():
    msg = parse_error("""graph @main(%x: f32[2]) -> (f32[2]) {
  %a = add(%x, %b) : f32[2]
  %b = relu(%a) : f32[2]
  return %b
}""")
    assert "bad.tfir:2:16: cycle through %b -> %a -> %b" in msg or \
        "cycle through %a -> %b -> %a" in msg


def test_use_before_definition_without_cycle():
    msg = parse_error("""graph @main(%x: f32[2]) -> (f32[2]) {
  %a = relu(%b) : f32[2]
  %b = relu(%x) : f32[2]
  return %a
}""")
    assert "%b is used before its definition on line 3" in msg


def test_bad_dense_payloads():
    msg = parse_error("""graph @main() -> (f32[2]) {
  %0 = constant {value=dense<f32[2]: [1.0]>} : f32[2]
  %1 = constant {value=dense<f32[2]: 0x0000>} : f32[2]
  return %0
}""")
    assert "needs 2 values, got 1" in msg and "hex payload has 2 bytes, f32[2] needs 8" in msg


def test_duplicate_definition_and_return_type_mismatch():
    msg = parse_error("""graph @main(%x: f32[2]) -> (f32[3]) {
  %a = relu(%x) : f32[2]
  %a = relu(%x) : f32[2]
  return %a
}""")
    assert "%a is defined twice (first on line 2)" in msg
    assert "declared result type f32[3]" in msg


def test_garbage_and_binary_input():
    assert "unexpected character" in parse_error("graph @main() -> () { ~ }")
    assert "empty input" in parse_error("")
    assert "expected 'graph'" in parse_error("hello world")


def test_deep_nesting_is_an_error_not_a_crash():
    deep = "[" * 5000 + "]" * 5000
    msg = parse_error(f"""graph @main(%x: f32[2]) -> (f32[2]) {{
  %a = relu(%x) {{alpha={deep}}} : f32[2]
  return %a
}}""")
    assert "nested too deeply" in msg
