"""The confinement a sandboxed plugin's worker process applies to itself, before it imports the plugin's code.

The worker imports what it needs, calls `confine` once, then imports the untrusted plugin. `confine` applies, in
this order (each layer is per process or per thread as noted, and none can be undone by the confined code):

- rlimits (process-wide): address space (`Limits.memory_mb`; an allocation beyond it is a MemoryError, the process
  lives on), open files, size of a written file (a longer write is an OSError: Python ignores SIGXFSZ), CPU time,
  and no core dumps. They bound what the plugin may use, not what it may see.
- no-new-privs: no execve could ever grant privileges again (set-user-ID files, file capabilities). Landlock and
  seccomp need it.
- capabilities: the worker drops every capability (effective, permitted, inheritable, ambient, and the bounding
  set when it may). A worker running as root keeps uid 0, so it still owns root's files, but it can no longer raise
  its hard rlimits back, chown, make device nodes, load kernel modules, change the network configuration, bypass
  file permissions or reach other processes' memory.
- Landlock (Linux 5.13 and later; what the running kernel's ABI version offers is used, the rest reported):
  - landlock-fs: the `read_only` paths can be read (and their files executed or mapped, for shared libraries), the
    `read_write` paths can be read and changed (create, remove, rename, truncate, write within them; no device
    nodes), /dev/null can be read and written, /dev/zero, /dev/random and /dev/urandom read. Everything else is
    denied, including /proc (so other processes' environ, cmdline and memory) and the rest of /dev. Landlock does
    not cover reading file metadata (stat, readlink, listing by `os.path.exists`), changing the mode, owner,
    timestamps or extended attributes of a file the worker's uid already may change (seccomp refuses chmod by path),
    nor connecting to a unix socket that has a path in the filesystem (seccomp refuses making one).
  - landlock-net (ABI 4): TCP bind and connect are denied unless `Limits.network`. It covers TCP only: UDP, raw
    and packet sockets are left to seccomp's socket rule.
  - landlock-signals (ABI 6): signals to processes outside the worker's Landlock domain (the host, everything
    else on the machine) and connecting to their abstract unix sockets are denied.
- seccomp (x86_64 and aarch64; another architecture reports the layer unavailable): a BPF filter returns EPERM
  for new processes (fork, vfork, clone without CLONE_THREAD, execve, execveat), for the syscalls that reach other
  processes or the kernel's wider surface (ptrace, process_vm_readv/writev, pidfd_getfd, mount and the new mount
  API, umount2, unshare, setns, pivot_root, chroot, keyctl, add_key, request_key, bpf, perf_event_open,
  userfaultfd, io_uring, module loading, kexec, reboot, swapon/swapoff, iopl/ioperm, and chmod by path, which a
  root worker could use on root's files anywhere), and for socket() of any family, or with `Limits.network` any but
  AF_INET and AF_INET6 (and never raw or packet types): no unix socket with a path, which file permissions alone
  would guard, and a root worker passes those. socketpair() stays. clone3 is ENOSYS, so that the C library falls
  back to clone for threads. A syscall made through another ABI (i386 or x32 on x86_64) kills the process or is
  EPERM. Threads still work; asyncio still works (its self-pipe is a unix socketpair).

Landlock, no-new-privs, the capabilities and seccomp filters apply to the calling thread and the threads and
processes it starts afterwards, so `confine` refuses to run in a process that already has more than one thread.

`confine` reports each layer as "active" (with details in parentheses) or the reason it is not (`Confinement`);
`available` reports what could be applied without applying anything. A layer the machine does not offer is
reported, not an error; a layer the machine offers that fails to apply raises OSError, as a worker must not run a
plugin believing it is confined. On macOS and Windows none of the Linux layers exist, and `available()` says so;
rlimits apply where the platform has them (not on Windows).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import stat
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

if sys.platform != "win32":
    import resource

LAYERS = ("rlimits", "no-new-privs", "capabilities", "landlock-fs", "landlock-net", "landlock-signals", "seccomp")

_MB = 1024 * 1024
_confined = False


@dataclass(frozen=True)
class Limits:
    """Limits is what a plugin's worker may use; 0 leaves a limit as the worker inherited it (unlimited, for the
    CPU time: the host enforces each request's timeout)."""

    memory_mb: int = 1024  # RLIMIT_AS
    open_files: int = 256  # RLIMIT_NOFILE
    file_size_mb: int = 1024  # RLIMIT_FSIZE
    cpu_seconds: int = 0  # RLIMIT_CPU
    network: bool = False  # TCP connect and bind (Landlock net), inet sockets (seccomp)


@dataclass(frozen=True)
class Confinement:
    """Confinement maps each layer's name to "active" (maybe with details in parentheses) or why it is not."""

    layers: dict[str, str]

    def missing(self) -> list[str]:
        """missing is the names of the layers that are not active."""
        return [name for name, state in self.layers.items() if not state.startswith("active")]


# --- the C library ---------------------------------------------------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL:
    """_libc is the process's C library, with errno kept for ctypes.get_errno."""
    return ctypes.CDLL(None, use_errno=True)


def _checked(result: int, what: str) -> int:
    """_checked returns a C call's non-negative result, or raises OSError with its errno."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _syscall(number: int, *args: int | bytes | ctypes.Array[ctypes.c_char] | None) -> int:
    """_syscall makes a raw system call (ints as longs, bytes and buffers as pointers); raises OSError on failure."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long  # a long: a pointer-sized result
    converted = [ctypes.c_long(arg) if isinstance(arg, int) else arg for arg in args]
    return _checked(libc.syscall(ctypes.c_long(number), *converted), f"syscall {number}")


def _prctl(option: int, *args: int | ctypes.c_void_p) -> int:
    """_prctl calls prctl(2) with up to four more arguments (ints as unsigned longs); raises OSError on failure."""
    converted = [ctypes.c_ulong(arg) if isinstance(arg, int) else arg for arg in args]
    converted += [ctypes.c_ulong(0)] * (4 - len(converted))
    return _checked(_libc().prctl(ctypes.c_int(option), *converted), f"prctl {option}")


# --- rlimits ---------------------------------------------------------------------------------------------------


def _wanted_limits(limits: Limits) -> list[tuple[str, int]]:
    """_wanted_limits is each rlimit's name and value in bytes, counts or seconds (0: leave it)."""
    return [
        ("RLIMIT_AS", limits.memory_mb * _MB),
        ("RLIMIT_NOFILE", limits.open_files),
        ("RLIMIT_FSIZE", limits.file_size_mb * _MB),
        ("RLIMIT_CPU", limits.cpu_seconds),
    ]


def _set_limit(name: str, value: int) -> None:
    """_set_limit sets the soft and hard rlimit `name` to `value`, never above the hard limit the process has."""
    which = getattr(resource, name)
    hard = resource.getrlimit(which)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _apply_rlimits(limits: Limits) -> str:
    """_apply_rlimits sets the rlimits of `limits` and no core dumps; raises on Linux, reports elsewhere."""
    if sys.platform == "win32":
        return "unavailable: Windows has no rlimits"
    failed: list[str] = []
    for name, value in [*_wanted_limits(limits), ("RLIMIT_CORE", 0)]:
        if value <= 0 and name != "RLIMIT_CORE":
            continue
        try:
            _set_limit(name, value)
        except (OSError, ValueError) as exc:
            if sys.platform == "linux":
                raise OSError(f"setrlimit {name}: {exc}") from exc
            failed.append(f"{name}: {exc}")
    return f"partial: {'; '.join(failed)}" if failed else "active"


# --- no-new-privs and capabilities -----------------------------------------------------------------------------

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_SETPCAP = 8
_CAPABILITY_VERSION_3 = 0x20080522


def _capability_header() -> ctypes.Array[ctypes.c_char]:
    """_capability_header is a __user_cap_header_struct for this process (version 3: two 32-bit words per set)."""
    return ctypes.create_string_buffer(struct.pack("=Ii", _CAPABILITY_VERSION_3, 0), 8)


def _effective_capabilities() -> int:
    """_effective_capabilities is the calling thread's effective capability set as one 64-bit mask."""
    data = ctypes.create_string_buffer(24)
    _checked(_libc().capget(_capability_header(), data), "capget")
    words: tuple[int, ...] = struct.unpack("=6I", data.raw)
    return words[0] | words[3] << 32


def _drop_bounding_set() -> None:
    """_drop_bounding_set removes every capability from the bounding set, up to the last one the kernel knows."""
    for cap in range(64):
        try:
            _prctl(_PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # past the kernel's last capability
                return
            raise


def _drop_capabilities() -> str:
    """_drop_capabilities empties the bounding (when allowed), ambient, inheritable, permitted and effective sets."""
    held = _effective_capabilities()
    if held >> _CAP_SETPCAP & 1:
        _drop_bounding_set()
    try:
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a kernel without ambient capabilities
            raise
    _checked(_libc().capset(_capability_header(), ctypes.create_string_buffer(24)), "capset")
    return "active (all dropped)" if held else "active (none held)"


# --- Landlock --------------------------------------------------------------------------------------------------

_SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on x86_64 and aarch64
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_BLOCK = 1 << 11
_FS_ABI_1 = (1 << 13) - 1  # EXECUTE to MAKE_SYM: the rights of the first ABI
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV  # valid on a file
_FS_READ_ONLY = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1

_DEVICES = {"/dev/null": _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE}
_DEVICES.update(dict.fromkeys(("/dev/zero", "/dev/random", "/dev/urandom"), _FS_READ_FILE))


def _landlock_abi() -> tuple[int, str]:
    """_landlock_abi is the kernel's Landlock ABI version (0 when there is none) and, for 0, the reason."""
    try:
        return _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION), ""
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return 0, "unavailable: the kernel has no Landlock (Linux 5.13 or later, CONFIG_SECURITY_LANDLOCK)"
        if exc.errno == errno.EOPNOTSUPP:
            return 0, "unavailable: Landlock is disabled (lsm= on the kernel command line)"
        return 0, f"unavailable: {exc}"


def _handled_fs(abi: int) -> int:
    """_handled_fs is every filesystem right the Landlock ABI `abi` knows: all of them are denied unless a rule
    allows them."""
    mask = _FS_ABI_1
    for version, right in ((2, _FS_REFER), (3, _FS_TRUNCATE), (5, _FS_IOCTL_DEV)):
        if abi >= version:
            mask |= right
    return mask


def _ruleset_attr(abi: int, network: bool) -> bytes:
    """_ruleset_attr is a landlock_ruleset_attr with as many fields as the ABI knows: handled_access_fs, then
    handled_access_net (ABI 4), then scoped (ABI 6)."""
    fields = [_handled_fs(abi)]
    if abi >= 4:
        fields.append(0 if network else _NET_BIND_TCP | _NET_CONNECT_TCP)
    if abi >= 6:
        fields.append(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL)
    return struct.pack(f"={len(fields)}Q", *fields)


def _allow_path(ruleset: int, path: str, rights: int) -> None:
    """_allow_path adds a path_beneath rule granting `rights` (only the file rights when it is a file); a missing
    path is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):  # fstat works on an O_PATH descriptor
            rights &= _FS_FILE_RIGHTS
        attr = struct.pack("=Qi", rights, fd)  # landlock_path_beneath_attr is packed: 12 bytes
        _syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, attr, 0)
    finally:
        os.close(fd)


def _add_rules(ruleset: int, abi: int, read_only: Sequence[Path], read_write: Sequence[Path]) -> None:
    """_add_rules allows the read-only paths, the read-write paths and the harmless devices."""
    handled = _handled_fs(abi)
    writable = handled & ~(_FS_MAKE_CHAR | _FS_MAKE_BLOCK | _FS_IOCTL_DEV)
    for path in read_only:
        _allow_path(ruleset, os.fspath(path), _FS_READ_ONLY & handled)
    for path in read_write:
        _allow_path(ruleset, os.fspath(path), writable)
    for device, rights in _DEVICES.items():
        _allow_path(ruleset, device, rights & handled)


def _landlock_reports(abi: int, network: bool) -> dict[str, str]:
    """_landlock_reports is the state of the three Landlock layers under the ABI `abi` (0: none)."""
    return {
        "landlock-fs": f"active (ABI {abi})",
        "landlock-net": (
            f"unavailable: Landlock ABI {abi} < 4"
            if abi < 4
            else "active (TCP allowed: limits.network)"
            if network
            else "active"
        ),
        "landlock-signals": f"unavailable: Landlock ABI {abi} < 6" if abi < 6 else "active",
    }


def _apply_landlock(read_only: Sequence[Path], read_write: Sequence[Path], network: bool) -> dict[str, str]:
    """_apply_landlock restricts the calling thread to the rules of `_add_rules`, or reports why it cannot."""
    abi, reason = _landlock_abi()
    if not abi:
        return dict.fromkeys(("landlock-fs", "landlock-net", "landlock-signals"), reason)
    attr = _ruleset_attr(abi, network)
    ruleset = _syscall(_SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0)
    try:
        _add_rules(ruleset, abi, read_only, read_write)
        _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    return _landlock_reports(abi, network)


# --- seccomp ---------------------------------------------------------------------------------------------------

Instruction = tuple[int, int, int, int]  # a classic BPF sock_filter: code, jt, jf, k

_BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: load 32 bits of seccomp_data
_BPF_ALU_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_BPF_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K

_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_PR_GET_SECCOMP = 21
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2  # prctl's mode (the seccomp syscall's SECCOMP_SET_MODE_FILTER is 1)
_SECCOMP_GET_ACTION_AVAIL = 2

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]. Both architectures are little endian,
# so an argument's low 32 bits are at its own offset.
_NR_OFFSET = 0
_ARCH_OFFSET = 4
_ARGS_OFFSET = 16

_CLONE_THREAD = 0x00010000
_AF_INET, _AF_INET6 = 2, 10
_SOCK_TYPE_MASK = 0xF  # the type argument also carries SOCK_NONBLOCK and SOCK_CLOEXEC
_SOCK_RAW, _SOCK_PACKET = 3, 10
_X32_SYSCALL_BIT = 0x40000000

# Syscall numbers from 424 on are the same on every architecture.
_COMMON_DENIED = {
    "io_uring_setup": 425,  # io_uring's operations (sockets, opens) would not pass through this filter
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    "open_tree_attr": 467,
    "fchmodat2": 452,
}


@dataclass(frozen=True)
class _Arch:
    """_Arch is what the filter needs of one architecture: its AUDIT_ARCH value and syscall numbers."""

    audit: int
    denied: dict[str, int]
    clone: int
    clone3: int
    socket: int
    seccomp: int
    x32: bool  # x86_64's x32 ABI shares AUDIT_ARCH_X86_64, with _X32_SYSCALL_BIT set in the number


_X86_64 = _Arch(
    audit=0xC000003E,
    denied={
        "fork": 57,
        "vfork": 58,
        "execve": 59,
        "execveat": 322,
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "mount": 165,
        "umount2": 166,
        "unshare": 272,
        "setns": 308,
        "pivot_root": 155,
        "chroot": 161,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "bpf": 321,
        "perf_event_open": 298,
        "userfaultfd": 323,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "reboot": 169,
        "swapon": 167,
        "swapoff": 168,
        "iopl": 172,
        "ioperm": 173,
        "chmod": 90,  # by path: a root worker owns root's files everywhere (fchmod, on an open file, stays)
        "fchmodat": 268,
        **_COMMON_DENIED,
    },
    clone=56,
    clone3=435,
    socket=41,
    seccomp=317,
    x32=True,
)

_AARCH64 = _Arch(  # the generic table (asm-generic/unistd.h): no fork or vfork, the C library uses clone
    audit=0xC00000B7,
    denied={
        "execve": 221,
        "execveat": 281,
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "mount": 40,
        "umount2": 39,
        "unshare": 97,
        "setns": 268,
        "pivot_root": 41,
        "chroot": 51,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "bpf": 280,
        "perf_event_open": 241,
        "userfaultfd": 282,
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "kexec_load": 104,
        "kexec_file_load": 294,
        "reboot": 142,
        "swapon": 224,
        "swapoff": 225,
        "fchmodat": 53,
        **_COMMON_DENIED,
    },
    clone=220,
    clone3=435,
    socket=198,
    seccomp=277,
    x32=False,
)

_ARCHES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}


def _arch() -> _Arch | None:
    """_arch is the running architecture's table, or None for an architecture (or a 32-bit Python) not handled."""
    if struct.calcsize("P") != 8:
        return None
    return _ARCHES.get(platform.machine().lower())


def _load(offset: int) -> Instruction:
    """_load loads the 32-bit word of seccomp_data at `offset` into the accumulator."""
    return (_BPF_LD_W_ABS, 0, 0, offset)


def _load_argument(index: int) -> Instruction:
    """_load_argument loads the low 32 bits of the syscall's argument `index`."""
    return _load(_ARGS_OFFSET + 8 * index)


def _jump_equal(value: int, if_true: int, if_false: int) -> Instruction:
    """_jump_equal skips `if_true` instructions when the accumulator equals `value`, else `if_false`."""
    return (_BPF_JEQ_K, if_true, if_false, value)


def _ret(action: int) -> Instruction:
    """_ret ends the filter with `action`."""
    return (_BPF_RET_K, 0, 0, action)


def _error(code: int) -> int:
    """_error is the action failing the syscall with errno `code`."""
    return _SECCOMP_RET_ERRNO | code


def _when_syscall(number: int, body: list[Instruction]) -> list[Instruction]:
    """_when_syscall runs `body` (which must end in returns) for the syscall `number`, and skips it otherwise; the
    accumulator must hold the syscall number."""
    return [_jump_equal(number, 0, len(body)), *body]


def _fail(number: int, code: int) -> list[Instruction]:
    """_fail makes the syscall `number` fail with errno `code`."""
    return _when_syscall(number, [_ret(_error(code))])


def _check_arch(arch: _Arch) -> list[Instruction]:
    """_check_arch kills the process on a syscall made through another ABI (other numbers), and loads the number."""
    block = [_load(_ARCH_OFFSET), _jump_equal(arch.audit, 1, 0), _ret(_SECCOMP_RET_KILL_PROCESS), _load(_NR_OFFSET)]
    if arch.x32:  # x32 syscalls: the same AUDIT_ARCH, numbers with the x32 bit
        block += [(_BPF_JGE_K, 0, 1, _X32_SYSCALL_BIT), _ret(_error(errno.EPERM))]
    return block


def _clone_rule(arch: _Arch) -> list[Instruction]:
    """_clone_rule lets clone make threads (CLONE_THREAD in the flags, argument 0) and nothing else."""
    return _when_syscall(
        arch.clone,
        [
            _load_argument(0),
            (_BPF_JSET_K, 1, 0, _CLONE_THREAD),
            _ret(_error(errno.EPERM)),
            _ret(_SECCOMP_RET_ALLOW),
        ],
    )


def _socket_rule(arch: _Arch, network: bool) -> list[Instruction]:
    """_socket_rule refuses socket(), and with `network` allows it for inet sockets that are not raw or packet.

    No unix socket is made with socket(): one with a path in the filesystem is reached by its file permissions
    alone (Landlock does not cover connect), and a root worker would reach root's (a container runtime's, say).
    socketpair(), a separate syscall, stays: asyncio's self-pipe is one."""
    if not network:
        return _when_syscall(arch.socket, [_ret(_error(errno.EPERM))])
    body = [
        _load_argument(0),  # 0: the family
        _jump_equal(_AF_INET, 1, 0),  # 1: to 3, check the type
        _jump_equal(_AF_INET6, 0, 5),  # 2: else to 8, deny
        _load_argument(1),  # 3: the type, without its flags
        (_BPF_ALU_AND_K, 0, 0, _SOCK_TYPE_MASK),  # 4
        _jump_equal(_SOCK_RAW, 2, 0),  # 5: to 8, deny
        _jump_equal(_SOCK_PACKET, 1, 0),  # 6: to 8, deny
        _ret(_SECCOMP_RET_ALLOW),  # 7
        _ret(_error(errno.EPERM)),  # 8
    ]
    return _when_syscall(arch.socket, body)


def _seccomp_program(arch: _Arch, network: bool) -> list[Instruction]:
    """_seccomp_program is the whole filter: the architecture check, the denied syscalls, clone3 as ENOSYS (the C
    library then makes threads with clone), the clone and socket rules, and allow for everything else."""
    program = _check_arch(arch)
    for number in arch.denied.values():
        program += _fail(number, errno.EPERM)
    program += _fail(arch.clone3, errno.ENOSYS)
    program += _clone_rule(arch)
    program += _socket_rule(arch, network)
    program.append(_ret(_SECCOMP_RET_ALLOW))
    return program


class _SockFprog(ctypes.Structure):
    """_SockFprog is struct sock_fprog: the number of instructions and a pointer to them."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_filter(program: list[Instruction]) -> None:
    """_install_filter loads `program` as the calling thread's seccomp filter (no_new_privs must be set)."""
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.c_void_p(ctypes.addressof(fprog)))


def _seccomp_state(arch: _Arch | None) -> str:
    """_seccomp_state is "active" when a filter with KILL_PROCESS can be loaded here, or why not."""
    if arch is None:
        return f"unavailable: no filter for {platform.machine()} ({struct.calcsize('P') * 8}-bit Python)"
    try:
        _prctl(_PR_GET_SECCOMP)
    except OSError:
        return "unavailable: the kernel has no seccomp (CONFIG_SECCOMP)"
    action = struct.pack("=I", _SECCOMP_RET_KILL_PROCESS)
    try:
        _syscall(arch.seccomp, _SECCOMP_GET_ACTION_AVAIL, 0, action)
    except OSError as exc:
        return f"unavailable: no seccomp filters with SECCOMP_RET_KILL_PROCESS ({exc.strerror})"
    return "active"


def _apply_seccomp(network: bool) -> str:
    """_apply_seccomp installs `_seccomp_program` for this architecture, or reports why it cannot."""
    arch = _arch()
    state = _seccomp_state(arch)
    if arch is None or state != "active":
        return state
    _install_filter(_seccomp_program(arch, network))
    return "active"


# --- the public API --------------------------------------------------------------------------------------------


def _elsewhere() -> dict[str, str]:
    """_elsewhere is the report on an OS that is not Linux: only rlimits may exist."""
    reason = f"unavailable: Linux only (this is {sys.platform})"
    layers = dict.fromkeys(LAYERS, reason)
    layers["rlimits"] = "unavailable: Windows has no rlimits" if sys.platform == "win32" else "active"
    return layers


def _no_new_privs_state() -> str:
    """_no_new_privs_state is "active" when the kernel knows PR_SET_NO_NEW_PRIVS (Linux 3.5), or why not."""
    try:
        _prctl(_PR_GET_NO_NEW_PRIVS)
    except OSError as exc:
        return f"unavailable: {exc.strerror}"
    return "active"


@functools.cache
def available() -> Confinement:
    """available reports which layers `confine` could apply on this machine, applying nothing. The kernel's answer
    does not change while a process runs, so it is probed once."""
    if sys.platform != "linux":
        return Confinement(_elsewhere())
    abi, reason = _landlock_abi()
    landlock = _landlock_reports(abi, False) if abi else dict.fromkeys(LAYERS[3:6], reason)
    capabilities = "active (all dropped)" if _effective_capabilities() else "active (none held)"
    layers = {"rlimits": "active", "no-new-privs": _no_new_privs_state(), "capabilities": capabilities}
    return Confinement({**layers, **landlock, "seccomp": _seccomp_state(_arch())})


def _thread_count() -> int:
    """_thread_count is the number of threads of this process, native ones included when /proc tells."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _single_threaded(patience: float = 1.0) -> bool:
    """_single_threaded tells whether this process has one thread; a thread Python has joined may still be leaving
    the kernel's list, so once Python has no other thread it waits up to `patience` seconds for the list to agree."""
    deadline = time.monotonic() + patience
    while _thread_count() > 1:
        if threading.active_count() > 1 or time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def confine(read_only: Sequence[Path], read_write: Sequence[Path], limits: Limits) -> Confinement:
    """confine applies, in this order: rlimits, PR_SET_NO_NEW_PRIVS, dropping every capability, Landlock
    (filesystem: the `read_only` paths readable, files and directories, executable for shared libraries; the
    `read_write` paths fully writable: create, remove, rename, truncate, write within; everything else denied,
    including /proc and /dev but for /dev/null (read and write), /dev/zero, /dev/random and /dev/urandom (read);
    network (ABI 4): TCP bind and connect denied unless `limits.network`; scopes (ABI 6): signals to and abstract
    unix sockets of processes outside the domain denied), then seccomp-bpf (see the module's docstring).

    Missing paths are skipped. A layer the machine does not offer is reported in the result; one it offers that
    fails to apply raises OSError. confine may be called once per process, while it has a single thread; a second
    call, or a call with other threads running, raises RuntimeError."""
    global _confined
    if _confined:
        raise RuntimeError("confine was already called in this process")
    if sys.platform == "linux" and not _single_threaded():
        raise RuntimeError("confine must be called while the process has a single thread")
    _confined = True
    rlimits = _apply_rlimits(limits)
    if sys.platform != "linux":
        return Confinement({**_elsewhere(), "rlimits": rlimits})
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    layers = {"rlimits": rlimits, "no-new-privs": "active", "capabilities": _drop_capabilities()}
    layers.update(_apply_landlock(read_only, read_write, limits.network))
    layers["seccomp"] = _apply_seccomp(limits.network)
    return Confinement(layers)


_KEPT_VARIABLES = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "VIRTUAL_ENV",
    "SYSTEMROOT",  # Windows cannot start Python without it
)


def scrubbed_environment(environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """scrubbed_environment is the environment a worker starts with: PATH, the locale and time zone, Python's
    search path, hash seed and virtual environment, and SYSTEMROOT, when `environ` has them; HOME and TMPDIR set to
    `home`. Nothing else: no XCORE_* setting, database or Redis URL, proxy, token or key reaches a plugin."""
    kept = {name: environ[name] for name in _KEPT_VARIABLES if name in environ}
    return {**kept, "HOME": os.fspath(home), "TMPDIR": os.fspath(home)}
