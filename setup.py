"""Builds the optional native Gramian kernel; pyproject.toml says the rest.

``mtl_optax/_src/native/gramian_kernel.cc`` is an XLA FFI handler, compiled
against the FFI headers that jaxlib ships (hence jaxlib in the build
requirements). It needs a C++17 compiler; where it cannot be built the
install goes on without it and the library computes the Gramian with XLA
(mtl_optax/_src/native.py).
"""

import os

import jaxlib
from setuptools import Extension
from setuptools import setup

# jaxlib's headers as system headers: their own warnings stay quiet.
FFI_HEADERS = os.path.join(os.path.dirname(jaxlib.__file__), 'include')

setup(ext_modules=[
    Extension(
        'mtl_optax._src._gramian_kernel',
        sources=['mtl_optax/_src/native/gramian_kernel.cc'],
        language='c++',
        # -Wno-psabi: GCC's note that 64-byte vectors change the calling
        # convention without AVX-512; the kernel passes none across files.
        extra_compile_args=['-isystem', FFI_HEADERS, '-O3', '-std=c++17',
                            '-pthread', '-Wno-psabi'],
        extra_link_args=['-pthread'],
        optional=True,
    ),
])
