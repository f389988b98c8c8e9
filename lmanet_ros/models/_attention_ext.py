"""Build and load the compiled CPU kernel of local memory attention (``lmanet_ros/csrc``).

The kernel (``local_memory_attention.cpp``) is a small torch operator library registered as
``torch.ops.lmanet_ros.local_memory_attention``. It is compiled ahead of time, never on import:

    python -m lmanet_ros.models._attention_ext build

(``scripts/setup_venv.sh`` runs this after installing the package). The library's file name
carries a tag hashed from the source, the compiler flags, the torch version and the machine
architecture, so a library built for another source or torch version is simply not found:
:func:`load` then reports why and the caller uses the PyTorch path. On x86-64 the library
holds an AVX2 + FMA build of the tile kernel and a baseline one, chosen at run time from the
CPU's features, so no ``-march`` flag is needed and the library runs on any x86-64 CPU.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

__all__ = ["SOURCE", "library_path", "build", "load"]

#: The kernel's C++ source.
SOURCE = Path(__file__).resolve().parents[1] / "csrc" / "local_memory_attention.cpp"
#: Where built libraries go (ignored by git: ``build/``).
LIBRARY_DIR = SOURCE.parent / "build"
#: Compiler flags. -ffp-contract=fast lets the vector code use fused multiply-adds; torch's
#: headers need C++20; -Wno-psabi silences notes about passing 32-byte vectors.
CXXFLAGS = ("-O3", "-std=c++20", "-fPIC", "-shared", "-ffp-contract=fast", "-Wno-psabi")


def _torch_dir() -> Path:
    return Path(torch.__file__).resolve().parent


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def library_path() -> Path:
    """The library file built from the current source for this torch and architecture."""
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(CXXFLAGS).encode(), torch.__version__.encode(),
                 platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    return LIBRARY_DIR / f"liblmanet_attention_{digest.hexdigest()[:16]}.so"


def build(*, verbose: bool = False) -> Path:
    """Compile the kernel library into :data:`LIBRARY_DIR` (no-op when it exists).

    Other versions of the library in that folder are removed. The compiler is ``$CXX`` or
    ``c++``; it needs torch's headers (shipped in the torch wheel).

    Returns:
        The library's path.

    Raises:
        RuntimeError: the compiler is missing or fails (its output is in the message).
    """
    target = library_path()
    if target.exists():
        return target
    torch_dir = _torch_dir()
    lib_dir = torch_dir / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    LIBRARY_DIR.mkdir(parents=True, exist_ok=True)
    # Compile into a temporary name beside the target and rename, so that a concurrent build or
    # an interrupted one never leaves a half-written library under the real name.
    handle, partial = tempfile.mkstemp(prefix=".partial-", suffix=".so", dir=LIBRARY_DIR)
    os.close(handle)
    command = [_compiler(), *CXXFLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
               f"-I{torch_dir / 'include'}", f"-I{torch_dir / 'include/torch/csrc/api/include'}",
               str(SOURCE), "-o", partial, f"-L{lib_dir}", "-lc10", "-ltorch_cpu",
               f"-Wl,-rpath,{lib_dir}"]
    if verbose:
        print(shlex.join(command), file=sys.stderr)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        Path(partial).unlink(missing_ok=True)
        raise RuntimeError(f"cannot run the C++ compiler '{command[0]}': {error}") from None
    if proc.returncode != 0:
        Path(partial).unlink(missing_ok=True)
        raise RuntimeError(f"compiling {SOURCE.name} failed ({shlex.join(command)}):\n"
                           f"{proc.stderr.strip()[-4000:]}")
    os.replace(partial, target)
    for old in LIBRARY_DIR.glob("liblmanet_attention_*.so"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


@functools.cache
def load() -> tuple[bool, str]:
    """Load the library once per process.

    Returns:
        (True, instruction set of the kernel, e.g. ``"avx2+fma"``) when the operator is
        available, else (False, the reason, with how to build it).
    """
    if not SOURCE.exists():
        return False, f"the kernel's source {SOURCE} is not installed"
    path = library_path()
    if not path.exists():
        return False, ("the compiled kernel is not built for this source and torch "
                       f"{torch.__version__} (build it: python -m {__spec__.name} build)")
    try:
        torch.ops.load_library(str(path))
        return True, str(torch.ops.lmanet_ros.kernel_isa())
    except (OSError, RuntimeError, AttributeError) as error:
        return False, f"loading {path} failed: {error}"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``build`` compiles the library, ``status`` says whether it loads."""
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", allow_abbrev=False,
                                     description="The compiled local memory attention kernel.")
    parser.add_argument("action", choices=("build", "status"),
                        help="build: compile the library; status: try to load it")
    parser.add_argument("--verbose", action="store_true", help="print the compiler command")
    args = parser.parse_args(argv)
    if args.action == "build":
        try:
            path = build(verbose=args.verbose)
        except RuntimeError as error:
            print(f"[lmanet_ros] compiled attention kernel NOT built: {error}", file=sys.stderr)
            return 1
        print(f"[lmanet_ros] compiled attention kernel: {path}")
    available, detail = load()
    print(f"[lmanet_ros] compiled attention kernel "
          f"{'loads (' + detail + ')' if available else 'unavailable: ' + detail}")
    return 0 if available else 1


if __name__ == "__main__":
    sys.exit(main())
