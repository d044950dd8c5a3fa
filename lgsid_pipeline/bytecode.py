"""Byte-compile what the pipeline imports, once, at install time.

``make install`` installs with ``pip --no-compile`` (pip otherwise compiles every file of
every package, most of transformers' hundreds of model folders included, which is over half
of the install on two cores) and then runs ``python -m lgsid_pipeline.bytecode``: importing
every module of the package, and the libraries its steps import lazily, writes the bytecode
of exactly what a run loads. Without it, a process under ``PYTHONDONTWRITEBYTECODE`` would
compile those modules again at every start.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

# Imported inside functions by the steps (so not reached by importing the package's modules).
LAZY_LIBRARIES = (
    "torch",
    "transformers",
    "transformers.models.bert.modeling_bert",
    "transformers.models.bert.tokenization_bert",
    "peft",
    "peft.tuners.lora",
    "mlflow",
    "mlflow.pyfunc",
    "sklearn.cluster",
    "sklearn.metrics",
    "sklearn.neighbors",
    "scipy.optimize",
    "scipy.stats",
    "matplotlib.pyplot",
    "geopandas",
    "dagster_webserver",
    "dagster_postgres",
    "dagster_k8s",
)


def package_modules(package: str = "lgsid_pipeline") -> list[str]:
    """Every module of ``package``, sub-packages included."""
    root = importlib.import_module(package)
    return [info.name for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")]


def compile_imports(modules: list[str]) -> list[str]:
    """Import ``modules``, writing their bytecode even where ``PYTHONDONTWRITEBYTECODE`` is
    set; the modules that failed to import, each with its error."""
    sys.dont_write_bytecode = False
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - reported, the install goes on
            failed.append(f"{name}: {type(error).__name__}: {error}")
    return failed


def main() -> int:
    sys.dont_write_bytecode = False  # before the package's own modules load
    started = time.perf_counter()
    modules = [*LAZY_LIBRARIES, *package_modules()]
    failed = compile_imports(modules)
    for line in failed:
        print(f"bytecode: could not import {line}", file=sys.stderr)
    print(
        f"byte-compiled the imports of {len(modules)} modules in "
        f"{time.perf_counter() - started:.0f}s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
