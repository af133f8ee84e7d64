#!/usr/bin/env python3
"""Give PyPI's torch wheel no-op stand-ins for the CUDA libraries it links against.

PyPI's Linux x86_64 torch wheel is a CUDA build: libtorch_cpu.so itself lists libcudart and libcupti
as NEEDED, and libtorch.so / libtorch_python.so pull in libtorch_cuda.so, which needs cuBLAS, cuDNN,
cuFFT, cuSPARSE(Lt), NCCL, NVSHMEM, nvrtc, cuFile... Those come as nvidia-* wheels, ~2.3 GB to
download. Without them `import torch` fails ("libcudart.so.13: cannot open shared object file").

This script writes, for every such library that is missing, a tiny shared object with the same
SONAME, the same symbol versions, and every symbol torch's libraries import from it, each one a
function that returns 100 (cudaErrorNoDevice) without doing anything. The dynamic loader is
satisfied, `torch.cuda.is_available()` is False, and nothing on the CPU path ever calls them: CPU
kernels (MKL, oneDNN, OpenMP) are the same code as with the real CUDA libraries.

The stand-ins go to <site-packages>/nvidia/cu13/lib, a directory on the RPATH of torch's libraries.
Needs cc (GNU as/ld), readelf and nm (binutils). Usage:  python make_cuda_stubs.py  (with the
interpreter of the venv that holds torch; torch is located without importing it).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

MARKER = "FINERCUT_CUDA_STUBS"
# Loaded only by torch.cuda on demand (and it needs the driver's libcuda.so.1): leave it alone.
LAZY = {"libcaffe2_nvrtc.so"}


MESSAGE = "no CUDA device: this torch has no-op stand-ins for its CUDA libraries (finercut-rs make_cuda_stubs.py)"
# functions that return a C string (error/status descriptions): a stub must return a valid pointer
STRING_RESULT = re.compile(r"Get(Error|Status)(String|Name)$|GetErrorString|GetLastErrorString")
# CUDA runtime functions that torch calls on the CPU path (transformers asks
# torch.cuda.is_current_stream_capturing() on every forward) and whose outputs it reads: answer
# "no device" properly instead of leaving outputs unset.
CUDART_C = r"""
typedef unsigned long long u64;
static const char message[] = "%s";
const char *cudaGetErrorString(int e) { (void)e; return message; }
const char *cudaGetErrorName(int e) { (void)e; return "cudaErrorNoDevice"; }
int cudaGetDeviceCount(int *n) { if (n) *n = 0; return 100; }
int cudaGetDevice(int *d) { if (d) *d = 0; return 100; }
int cudaGetLastError(void) { return 0; }
int cudaPeekAtLastError(void) { return 0; }
int cudaDriverGetVersion(int *v) { if (v) *v = 0; return 0; }
int cudaRuntimeGetVersion(int *v) { if (v) *v = 0; return 0; }
int cudaGetDriverEntryPoint(const char *s, void **f, u64 fl, int *st)
{ (void)s; (void)fl; if (f) *f = 0; if (st) *st = 1; return 100; }
int cudaGetDriverEntryPointByVersion(const char *s, void **f, unsigned v, u64 fl, int *st)
{ (void)s; (void)v; (void)fl; if (f) *f = 0; if (st) *st = 1; return 100; }
""" % MESSAGE


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def needed(path: str) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", run("readelf", "-d", "--wide", path))


def verneeds(path: str) -> dict[str, str]:
    """version name -> file that must define it (from .gnu.version_r)"""
    out: dict[str, str] = {}
    cur = None
    for line in run("readelf", "-V", "--wide", path).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"Name: (\S+)", line)
        if m and cur:
            out[m.group(1)] = cur
    return out


def main() -> int:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        print("torch is not installed in this interpreter", file=sys.stderr)
        return 1
    torch_dir = spec.submodule_search_locations[0]
    site = os.path.dirname(torch_dir)
    out_dir = os.path.join(site, "nvidia", "cu13", "lib")

    if os.path.exists(os.path.join(out_dir, MARKER)):
        # an earlier run's stand-ins: start again from scratch
        for p in glob.glob(os.path.join(out_dir, "*")):
            os.remove(p)

    libs = sorted(glob.glob(os.path.join(torch_dir, "lib", "*.so*")) + glob.glob(os.path.join(torch_dir, "_C*.so")))
    present = {os.path.basename(p) for p in libs}
    ldcache = run("ldconfig", "-p")

    def system_path(name: str) -> str | None:
        m = re.search(r"^\s+" + re.escape(name) + r" \(libc6,x86-64[^)]*\) => (\S+)", ldcache, re.M)
        return m.group(1) if m else None

    def resolvable(name: str) -> bool:
        return (
            name in present
            or system_path(name) is not None
            or any(os.path.exists(os.path.join(d, name)) for d in glob.glob(os.path.join(site, "nvidia", "*", "lib")))
        )

    eager = [p for p in libs if os.path.basename(p) not in LAZY]
    missing = sorted({n for p in eager for n in needed(p) if not resolvable(n)})
    if not missing:
        print("make_cuda_stubs: every library torch needs is present; nothing to do", file=sys.stderr)
        return 0

    versioned: dict[str, dict[str, set[str]]] = {}  # soname -> version name -> symbols
    unversioned: set[str] = set()
    defined: set[str] = set()
    sys_libs: set[str] = set()
    for p in eager:
        vmap = verneeds(p)
        for line in run("nm", "-D", "--undefined-only", p).splitlines():
            parts = line.split()
            if len(parts) != 2 or parts[0] != "U":
                continue  # weak references need no definition
            sym = parts[1]
            if "@" in sym:
                name, ver = sym.split("@", 1)
                ver = ver.lstrip("@")
                so = vmap.get(ver)
                if so in missing:
                    versioned.setdefault(so, {}).setdefault(ver, set()).add(name)
            else:
                unversioned.add(sym)
        for line in run("nm", "-D", "--defined-only", p).splitlines():
            parts = line.split()
            if len(parts) == 3:
                defined.add(parts[2].split("@")[0])
        sys_libs.update(n for n in needed(p) if n not in missing and n not in present)
    for n in sys_libs:
        path = system_path(n)
        if path:
            for line in run("nm", "-D", "--defined-only", path).splitlines():
                parts = line.split()
                if len(parts) == 3:
                    defined.add(parts[2].split("@")[0])
    # Unversioned imports nobody defines come from the unversioned CUDA libraries (NCCL, cuSPARSELt,
    # cuFile, ...) or from the Python interpreter (Py*, resolved from the executable at run time).
    loose = sorted(s for s in unversioned - defined if not re.match(r"_?Py", s))

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, MARKER), "w") as f:
        f.write("No-op stand-ins for CUDA libraries, written by finercut-rs benches/reference/make_cuda_stubs.py.\n"
                "Delete this directory and install the nvidia-* wheels to use a GPU.\n")
    tmp = tempfile.mkdtemp()
    for so in missing:
        vers = versioned.get(so, {})
        vsyms: set[str] = set().union(*vers.values()) if vers else set()
        syms = sorted(vsyms | set(loose))
        special = CUDART_C if so.startswith("libcudart.") else ""
        special_names = set(re.findall(r"^\S[^(]*?\b(cuda\w+)\(", special, re.M))
        asm = [".text"]
        for s in syms:
            if s in special_names:
                continue
            asm += [f'.globl "{s}"', f'.type "{s}",@function', f'"{s}":']
            if STRING_RESULT.search(s):  # returns a C string: give it one
                asm += ["  lea .Lmessage(%rip), %rax", "  ret"]
            else:  # an error code (cudaErrorNoDevice = 100, nonzero for every CUDA library); outputs untouched
                asm += ["  mov $100, %eax", "  ret"]
        asm += [".section .rodata", f'.Lmessage: .asciz "{MESSAGE}"', '.section .note.GNU-stack,"",@progbits']
        sources = [os.path.join(tmp, so + ".s")]
        with open(sources[0], "w") as f:
            f.write("\n".join(asm) + "\n")
        if special:
            sources.append(os.path.join(tmp, so + ".c"))
            with open(sources[1], "w") as f:
                f.write(special)
        vargs: list[str] = []
        if vers:
            nodes = []
            for ver, names in sorted(vers.items()):
                body = "".join(f'    "{n}";\n' for n in sorted(names))
                nodes.append(f"{ver} {{\n  global:\n{body}}};\n")
            body = "".join(f'    "{n}";\n' for n in loose if n not in vsyms)
            nodes.append(f"FINERCUT_STUB {{\n  global:\n{body}  local: *;\n}};\n")
            vfile = os.path.join(tmp, so + ".map")
            with open(vfile, "w") as f:
                f.write("".join(nodes))
            vargs = [f"-Wl,--version-script={vfile}"]
        subprocess.run(
            ["cc", "-O1", "-fPIC", "-shared", "-nostdlib", "-ffreestanding", f"-Wl,-soname,{so}", *vargs,
             *sources, "-o", os.path.join(out_dir, so)],
            check=True,
        )
        print(f"make_cuda_stubs: {so}: {len(vsyms)} versioned symbols ({', '.join(sorted(vers)) or '-'}), "
              f"{len(loose)} unversioned", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
