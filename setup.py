"""Builds fastret: the C++ core (libfastret.so) and the pybind11 extension through CMake, the
Python package, and the Salt returner modules (found by Salt through the salt.loader entry
point)."""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configure, build and install the CMake project into the package directory."""

    def build_extension(self, ext):
        import pybind11  # noqa: PLC0415 - a build requirement

        pkg_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        build_type = os.environ.get("FASTRET_BUILD_TYPE", "Release")
        args = [
            "cmake", str(ROOT),
            f"-DCMAKE_BUILD_TYPE={build_type}",
            "-DFASTRET_PYTHON=ON",
            "-DFASTRET_TESTS=OFF",
            f"-DFASTRET_PY_INSTALL_DIR={pkg_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        if shutil.which("ninja"):
            args += ["-G", "Ninja"]
        subprocess.check_call(args, cwd=build_dir)
        jobs = os.environ.get("FASTRET_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", ".", "-j", jobs], cwd=build_dir)
        subprocess.check_call(["cmake", "--install", "."], cwd=build_dir)


class BuildPyWithReturners(build_py):
    """Ship returners/*.py inside the package (fastret/returners/), where the entry point
    tells Salt to look."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "fastret" / "returners"
        target.mkdir(parents=True, exist_ok=True)
        for path in glob.glob(str(ROOT / "returners" / "*.py")):
            shutil.copy(path, target / Path(path).name)


setup(
    name="fastret",
    version="0.1.0",
    description="Fast, durable, secure delivery of SaltStack job returns and events",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    package_dir={"": "python"},
    packages=["fastret"],
    ext_modules=[CMakeExtension("fastret._native")],
    cmdclass={"build_ext": CMakeBuild, "build_py": BuildPyWithReturners},
    entry_points={
        "salt.loader": ["fastret = fastret.loader:get_dirs"],
        "console_scripts": ["fastret = fastret.cli:main"],
    },
    zip_safe=False,
)
