"""The operator table (skyhook_py.query.ir.OPS) against every other copy of the operators.

(a) the Python ``Op`` enum equals the flatc-generated one of formats/skyhook_scan.fbs;
(b) every operator has a kernel in the reference evaluator;
(c) the C++ runner's own table (``skyhook_scan_local --list-ops``: one line per operator,
    ``<value>\\t<Name>\\t<arity>\\t<kind>``, value ascending) equals OPS.
No cluster needed.  A drifted copy fails here, naming the operator.
"""

from __future__ import annotations

import subprocess

import pytest

from skyhook_py.paths import REPO_ROOT
from skyhook_py.query import ir, reference
from skyhook_py.query.ir import OPS, Op

LOCAL_RUNNER = REPO_ROOT / "build" / "bin" / "skyhook_scan_local"


def _generated_ops() -> dict[str, int]:
    try:
        from skyhook_py._generated import skyhook_scan_generated as fb
    except ImportError as e:  # pragma: no cover - depends on the build
        pytest.fail(f"the flatc-generated code is missing ({e}); run `scripts/setup.sh build`")
    return {k: v for k, v in vars(fb.Op).items() if not k.startswith("_")}


def test_python_enum_equals_the_generated_one():
    assert {op.name: op.value for op in Op} == _generated_ops()


def test_every_operator_has_a_row_and_a_kernel():
    assert set(OPS) == set(Op)
    assert set(reference.KERNELS) == set(Op), \
        f"no reference kernel for {sorted(o.name for o in set(Op) - set(reference.KERNELS))}"
    for op, spec in OPS.items():
        assert spec.kind in ir.KINDS, (op, spec.kind)
        assert (spec.arity == 0) == (spec.kind == "leaf"), op
        kernel = reference.KERNELS[op]
        assert callable(kernel) or isinstance(kernel, str), (op, kernel)
        if callable(kernel):  # a NumPy ufunc: its arity is the operator's
            assert kernel.nin == spec.arity, f"{op.name}: ufunc {kernel.__name__} takes {kernel.nin}"


def test_kinds_are_the_documented_ones():
    by_kind = {k: sorted(op.name for op in ir.ops_of(k)) for k in ir.KINDS}
    assert by_kind["leaf"] == ["Column", "Literal"]
    assert by_kind["logical"] == ["And", "Not", "Or"]
    assert by_kind["choice"] == ["Where"] and by_kind["mask"] == ["Mask"]
    assert sorted(by_kind["element_access"]) == ["First", "Index", "Last"]


def test_cpp_runner_lists_the_same_operators():
    if not LOCAL_RUNNER.is_file():
        pytest.skip(f"{LOCAL_RUNNER} is not built (scripts/setup.sh build)")
    proc = subprocess.run([str(LOCAL_RUNNER), "--list-ops"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"--list-ops failed ({proc.returncode}): {proc.stderr.strip()}"
    got = proc.stdout.splitlines()
    want = [f"{op.value}\t{op.name}\t{spec.arity}\t{spec.kind}"
            for op, spec in sorted(OPS.items(), key=lambda kv: kv[0].value)]
    assert got == want
