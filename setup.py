"""Build configuration beside pyproject.toml: the optional C accelerators (voicelab.sip.shed, voicelab.rtp.native).

``optional=True``: without a C compiler or Python headers the install still succeeds and
voicelab uses the pure-Python code (as it does with ``VOICELAB_NO_EXTENSIONS=1``).
Everything else about the package is in pyproject.toml.
"""

import os
import sys

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("VOICELAB_NO_EXTENSIONS"):
    ext_modules.append(Extension("voicelab.sip._shedc", ["voicelab/sip/_shedc.c"], optional=True,
                                 extra_compile_args=["-O2"]))
    if sys.platform.startswith("linux"):  # the native media engine (voicelab/rtp/native.py)
        ext_modules.append(Extension("voicelab.rtp._mediac", ["voicelab/rtp/_mediac.c"], optional=True,
                                     extra_compile_args=["-O2"], libraries=["pthread"]))

setup(ext_modules=ext_modules)
