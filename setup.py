"""Build the compiled core: every ``fastproto/_core/*.pyx`` becomes one extension.

The C helpers in ``fastproto/_core/src`` are header-only, so a module needs no
extra sources.  Code is compiled for baseline x86-64; wider vector paths are
chosen at run time (``__builtin_cpu_supports``), so an installed wheel runs on
any x86-64.  ``FASTPROTO_EXT=name,name`` restricts a development build to some
modules.
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
CORE = Path("fastproto") / "_core"

COMPILE_ARGS = ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wno-unused-function"]
if os.environ.get("FASTPROTO_DEBUG"):
    COMPILE_ARGS = ["-O1", "-g", "-std=gnu11", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
LINK_ARGS = ["-fsanitize=address,undefined"] if os.environ.get("FASTPROTO_DEBUG") else []


def extensions():
    only = {n for n in os.environ.get("FASTPROTO_EXT", "").split(",") if n}
    exts = []
    for pyx in sorted((HERE / CORE).glob("*.pyx")):
        if only and pyx.stem not in only:
            continue
        exts.append(
            Extension(
                f"fastproto._core.{pyx.stem}",
                [str(CORE / pyx.name)],
                include_dirs=[str(CORE / "src"), numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=COMPILE_ARGS,
                extra_link_args=LINK_ARGS + ["-lpthread"],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
)
