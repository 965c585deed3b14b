#!/usr/bin/env python3
"""Verifier instructions processed for loaded BPF programs (root).

Usage: bpf_verified_insns.py PROG_ID...   (ids from `bpftool prog show`)

bpftool 7.1 (Debian 12) does not print `verified_insns`; this reads it from
`bpf_prog_info` (uapi/linux/bpf.h: name at byte 64, verified_insns at 216).
The limit is 1,000,000: the TC program is close to it, so check before and
after any change to bpf-programs/.
"""
import ctypes
import struct
import sys

SYS_BPF = 321  # x86-64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        raise OSError(ctypes.get_errno(), "bpf syscall")
    return r


for prog_id in sys.argv[1:]:
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", int(prog_id)))
    info = ctypes.create_string_buffer(256)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, 256, ctypes.addressof(info)))
    raw = info.raw
    name = raw[64:80].split(b"\0")[0].decode()
    print(prog_id, name, "verified_insns", struct.unpack_from("<I", raw, 216)[0])
