//! The sandbox's system-call filter: the calls a processor has no business making, refused,
//! as glycin and Flatpak refuse them to their sandboxes. The policy is the table below, one row
//! per call with why; everything else is allowed (a processor is arbitrary code in any
//! language, so an allow-list would break what it links). Most of these need a capability the
//! sandbox has dropped anyway: the filter is a second wall for when the first has a hole (a
//! kernel bug reached through one of them, a capability left by mistake).
//!
//! Compiled here into a classic BPF program, handed to bubblewrap (`--add-seccomp-fd`), which
//! installs it, with no-new-privileges, right before it executes the processor.

use std::sync::OnceLock;

/// What a refused call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `EPERM`: not allowed here.
    NotPermitted,
    /// `ENOSYS`: "not implemented", so that the C library falls back to an older call the
    /// filter can judge (`clone3` passes its flags in memory, out of a filter's reach; glibc
    /// then uses `clone`, whose flags it sees).
    NotImplemented,
}

/// When a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    /// The low 32 bits of argument `arg` have any bit of `mask` set.
    AnyBit {
        arg: u32,
        mask: u32,
    },
    /// The low 32 bits of argument `arg` equal `value`.
    Equals {
        arg: u32,
        value: u32,
    },
}

struct Rule {
    call: libc::c_long,
    when: When,
    refusal: Refusal,
}

const fn always(call: libc::c_long) -> Rule {
    Rule {
        call,
        when: When::Always,
        refusal: Refusal::NotPermitted,
    }
}

/// `clone` flags that make new namespaces: a processor escaping into a namespace of its own
/// (a user namespace makes it root there, with a kernel surface to match).
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWCGROUP) as u32;

/// The policy.
fn rules() -> Vec<Rule> {
    let mut rules = vec![
        // Changing what the file system looks like: the sandbox's view is made by bwrap.
        always(libc::SYS_mount),
        always(libc::SYS_umount2),
        always(libc::SYS_pivot_root),
        always(libc::SYS_chroot),
        always(libc::SYS_move_mount),
        always(libc::SYS_open_tree),
        always(libc::SYS_fsopen),
        always(libc::SYS_fsconfig),
        always(libc::SYS_fsmount),
        always(libc::SYS_fspick),
        always(libc::SYS_mount_setattr),
        // New namespaces, or joining another's.
        always(libc::SYS_unshare),
        always(libc::SYS_setns),
        Rule {
            call: libc::SYS_clone,
            when: When::AnyBit {
                arg: 0,
                mask: NAMESPACE_FLAGS,
            },
            refusal: Refusal::NotPermitted,
        },
        Rule {
            call: libc::SYS_clone3,
            when: When::Always,
            refusal: Refusal::NotImplemented,
        },
        // Reading or steering other processes.
        always(libc::SYS_ptrace),
        always(libc::SYS_process_vm_readv),
        always(libc::SYS_process_vm_writev),
        always(libc::SYS_kcmp),
        always(libc::SYS_pidfd_getfd),
        // The kernel's key rings (shared beyond the sandbox).
        always(libc::SYS_keyctl),
        always(libc::SYS_add_key),
        always(libc::SYS_request_key),
        // Large kernel surfaces a processor does not need.
        always(libc::SYS_bpf),
        always(libc::SYS_perf_event_open),
        always(libc::SYS_userfaultfd),
        always(libc::SYS_io_uring_setup),
        always(libc::SYS_io_uring_enter),
        always(libc::SYS_io_uring_register),
        // The machine's, not a processor's: kernels, modules, swap, clocks, accounting, logs.
        always(libc::SYS_kexec_load),
        always(libc::SYS_kexec_file_load),
        always(libc::SYS_reboot),
        always(libc::SYS_init_module),
        always(libc::SYS_finit_module),
        always(libc::SYS_delete_module),
        always(libc::SYS_swapon),
        always(libc::SYS_swapoff),
        always(libc::SYS_acct),
        always(libc::SYS_quotactl),
        always(libc::SYS_syslog),
        always(libc::SYS_settimeofday),
        always(libc::SYS_clock_settime),
        always(libc::SYS_adjtimex),
        always(libc::SYS_clock_adjtime),
        always(libc::SYS_vhangup),
        // Opening files by handle walks around the mount view (a classic container escape).
        always(libc::SYS_open_by_handle_at),
        always(libc::SYS_name_to_handle_at),
        // Typing into a terminal, or its console tricks.
        Rule {
            call: libc::SYS_ioctl,
            when: When::Equals {
                arg: 1,
                value: libc::TIOCSTI as u32,
            },
            refusal: Refusal::NotPermitted,
        },
        Rule {
            call: libc::SYS_ioctl,
            when: When::Equals {
                arg: 1,
                value: libc::TIOCLINUX as u32,
            },
            refusal: Refusal::NotPermitted,
        },
    ];
    // Port I/O and ancient loaders (x86 only).
    #[cfg(target_arch = "x86_64")]
    rules.extend([
        always(libc::SYS_iopl),
        always(libc::SYS_ioperm),
        always(libc::SYS_uselib),
    ]);
    rules
}

/// `AUDIT_ARCH_*` of this build: a call made through another architecture's table (x86-64's
/// `int 0x80`, numbered as i386 calls) is not what the table means, and kills the process.
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xc000_00b7;

/// x86-64's x32 calls carry this bit in their number; none is allowed (the table numbers
/// the 64-bit calls only).
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

// Classic BPF, as seccomp takes it.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const fn arg_low(arg: u32) -> u32 {
    // Little-endian: the low word of args[arg] comes first.
    16 + 8 * arg
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn ret(refusal: Refusal) -> Insn {
    let errno = match refusal {
        Refusal::NotPermitted => libc::EPERM,
        Refusal::NotImplemented => libc::ENOSYS,
    };
    insn(RET_K, 0, 0, RET_ERRNO | errno as u32)
}

/// The filter as BPF instructions.
fn program() -> Vec<Insn> {
    let mut out = vec![
        insn(LD_W_ABS, 0, 0, ARCH_OFFSET),
        insn(JEQ_K, 1, 0, ARCH),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, NR),
    ];
    #[cfg(target_arch = "x86_64")]
    out.extend([insn(JGE_K, 0, 1, X32_BIT), ret(Refusal::NotImplemented)]);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = JGE_K;
    for rule in rules() {
        // Numbers are small and positive on every architecture built for.
        let call = rule.call as u32;
        match rule.when {
            When::Always => out.extend([insn(JEQ_K, 0, 1, call), ret(rule.refusal)]),
            When::AnyBit { arg, mask } => out.extend([
                insn(JEQ_K, 0, 4, call),
                insn(LD_W_ABS, 0, 0, arg_low(arg)),
                insn(JSET_K, 0, 1, mask),
                ret(rule.refusal),
                insn(LD_W_ABS, 0, 0, NR),
            ]),
            When::Equals { arg, value } => out.extend([
                insn(JEQ_K, 0, 4, call),
                insn(LD_W_ABS, 0, 0, arg_low(arg)),
                insn(JEQ_K, 0, 1, value),
                ret(rule.refusal),
                insn(LD_W_ABS, 0, 0, NR),
            ]),
        }
    }
    out.push(insn(RET_K, 0, 0, RET_ALLOW));
    out
}

/// The filter as bubblewrap reads it: `struct sock_filter`s, in the machine's byte order.
pub(crate) fn filter_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        program()
            .iter()
            .flat_map(|i| {
                let mut bytes = Vec::with_capacity(8);
                bytes.extend_from_slice(&i.code.to_ne_bytes());
                bytes.push(i.jt);
                bytes.push(i.jf);
                bytes.extend_from_slice(&i.k.to_ne_bytes());
                bytes
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one call, as the kernel would: what it returns.
    fn verdict(nr: u32, args: [u64; 6]) -> u32 {
        let program = program();
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&ARCH.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = program[pc];
            let next = pc + 1;
            pc = match i.code {
                LD_W_ABS => {
                    let at = i.k as usize;
                    a = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                    next
                }
                JEQ_K | JGE_K | JSET_K => {
                    let taken = match i.code {
                        JEQ_K => a == i.k,
                        JGE_K => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    next + usize::from(if taken { i.jt } else { i.jf })
                }
                RET_K => return i.k,
                other => panic!("unexpected instruction {other:#x}"),
            };
        }
    }

    #[test]
    fn the_table_refuses_what_it_says_and_allows_the_rest() {
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let call = |nr: libc::c_long| nr as u32;
        assert_eq!(verdict(call(libc::SYS_mount), [0; 6]), eperm);
        assert_eq!(verdict(call(libc::SYS_ptrace), [0; 6]), eperm);
        assert_eq!(verdict(call(libc::SYS_bpf), [0; 6]), eperm);
        assert_eq!(
            verdict(call(libc::SYS_clone3), [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(verdict(call(libc::SYS_read), [0; 6]), RET_ALLOW);
        assert_eq!(verdict(call(libc::SYS_openat), [0; 6]), RET_ALLOW);
        // clone: a thread or a process is fine, a namespace is not.
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(
            verdict(call(libc::SYS_clone), [thread, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        let userns = libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64;
        assert_eq!(
            verdict(call(libc::SYS_clone), [userns, 0, 0, 0, 0, 0]),
            eperm
        );
        // ioctl: TIOCSTI is refused, another request allowed.
        let tiocsti = libc::TIOCSTI;
        assert_eq!(
            verdict(call(libc::SYS_ioctl), [0, tiocsti, 0, 0, 0, 0]),
            eperm
        );
        let fionread = libc::FIONREAD;
        assert_eq!(
            verdict(call(libc::SYS_ioctl), [0, fionread, 0, 0, 0, 0]),
            RET_ALLOW
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            verdict(X32_BIT | call(libc::SYS_read), [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32,
            "x32 calls are refused"
        );
        // The rule after an argument rule is still reached.
        assert_eq!(verdict(call(libc::SYS_clone3), [userns, 0, 0, 0, 0, 0]), {
            RET_ERRNO | libc::ENOSYS as u32
        });
    }

    #[test]
    fn jumps_fit_and_the_bytes_are_whole_instructions() {
        assert_eq!(filter_bytes().len(), program().len() * 8);
        assert!(program().len() < 4096, "the kernel's limit is 4096");
    }
}
