"""Generates the gRPC stubs into attnscope/_proto before packaging, so an installed wheel
needs neither protoc nor the repository's proto/ folder."""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithStubs(build_py):
    def run(self):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from attnscope import _protogen
        _protogen.ensure_stubs()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
