"""The install-time byte-compilation: it must fail the install when a module cannot import."""

from __future__ import annotations

import sys

from lgsid_pipeline import bytecode


def test_compile_imports_reports_each_module_that_fails(tmp_path, monkeypatch):
    (tmp_path / "lgsid_bytecode_probe.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    failed = bytecode.compile_imports(["lgsid_bytecode_probe", "lgsid_no_such_module"])
    assert len(failed) == 1 and failed[0].startswith("lgsid_no_such_module: ModuleNotFoundError")
    # the bytecode of the module that imported is written despite dont_write_bytecode
    assert list((tmp_path / "__pycache__").glob("lgsid_bytecode_probe.*.pyc"))


def test_main_fails_when_a_lazy_library_is_missing(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)  # main sets it
    monkeypatch.setattr(bytecode, "LAZY_LIBRARIES", ("lgsid_no_such_library",))
    monkeypatch.setattr(bytecode, "package_modules", lambda: ["lgsid_pipeline.catalog"])
    assert bytecode.main() == 1


def test_package_modules_lists_the_stage_modules():
    modules = bytecode.package_modules()
    assert "lgsid_pipeline.definitions" in modules
    assert "lgsid_pipeline.alignment.gdpo" in modules
