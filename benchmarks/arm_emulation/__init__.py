"""Run edge's .pte files on ExecuTorch's aarch64 kernels (XNNPACK with KleidiAI) under qemu-user, no Arm hardware.

sysroot.py     the emulated runtime, built from packages alone into a cache folder: qemu-user 10 (Debian 13,
               unpacked), an arm64 Debian 12 root with python3.11, PyPI's aarch64 torch and executorch wheels
cuda_stubs.py  no-op aarch64 stand-ins for the CUDA libraries PyPI's aarch64 torch links against
guest.py       the job that runs on both sides: the same script natively on x86 and under emulation
"""
