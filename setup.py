"""Builds the optional C kernels; everything else about the package is in pyproject.toml.

`optional=True`: where no C compiler is at hand the build goes on without them, and the
optimizers run the same update rules in NumPy (slower on large networks, identical results).
"""

from setuptools import Extension, setup

try:  # the memory handler includes NumPy's headers (a build requirement in pyproject.toml)
    import numpy
except ImportError:
    numpy = None

setup(
    ext_modules=[
        Extension(
            "chainrule._kernels",
            ["chainrule/_kernels.c", "chainrule/_conv_kernels.c", "chainrule/_pool_kernels.c"],
            # Bit-identical to the NumPy code: no fused multiply-add, no fast-math reordering.
            # -fno-trapping-math only lets GCC compute both sides of a select (so the loops with
            # a condition vectorize); it changes no result, and nothing here reads FP exceptions.
            extra_compile_args=[
                "-O3",
                "-ffp-contract=off",
                "-fno-math-errno",
                "-fno-trapping-math",
            ],
            optional=True,
        )
    ]
    + (
        []
        if numpy is None
        else [
            Extension(
                "chainrule._memory",
                ["chainrule/_memory.c"],
                include_dirs=[numpy.get_include()],
                extra_compile_args=["-O2"],
                optional=True,
            )
        ]
    )
)
