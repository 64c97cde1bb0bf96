/*
 * offload-guard: the small process between the host and each processor process.
 *
 *     offload-guard STATUS_FD [--cgroup PROCS_FILE] PROGRAM [ARG...]
 *
 * The host starts it (a vfork child of the host, its own process group, PR_SET_PDEATHSIG
 * SIGUSR2, stdio and the progress pipe in place) with the processor's environment. It forks
 * and execs PROGRAM in a new session (and so a new process group), then:
 *
 *  - Forwards SIGTERM to the processor's group; SIGUSR2 (from the host, or as its parent-death
 *    signal when the host dies) SIGKILLs the processor's group.
 *  - Is a child subreaper (PR_SET_CHILD_SUBREAPER): a descendant that leaves the group (setsid,
 *    a double fork) is reparented here instead of to init, and when the processor ends, every
 *    process left below the guard is killed and reaped. None outlives its job.
 *  - With --cgroup, the processor joins that cgroup (writes its pid to PROCS_FILE, a
 *    cgroup.procs file the host created for the job) before it executes PROGRAM, so that the
 *    cgroup's memory limit holds for it and everything it starts.
 *  - Reports on STATUS_FD, one text line each: "pid N" once PROGRAM runs, or "error E" (errno)
 *    if it could not be executed, or "cgroup E" if it could not join the cgroup; at the end "end K", K the peak resident memory in KiB of the
 *    processor and of every descendant it or the guard reaped (wait4's ru_maxrss).
 *  - Exits as the processor did: the same code, or killed by the same signal.
 *
 *     offload-guard --exec-as UID GID SELF_FD PROGRAM [ARG...]
 *
 * A second, tiny mode, for a sandbox started by root: run inside the sandbox (from the memfd,
 * as /proc/self/fd/SELF_FD) once bubblewrap has made it, it drops every capability from the
 * bounding set, clears the supplementary groups, becomes UID and GID (all of real, effective
 * and saved: the kernel then clears the permitted and effective capabilities), closes SELF_FD
 * and executes PROGRAM. So a processor sandboxed by root runs as an unprivileged user, which
 * bubblewrap cannot do by itself without a user namespace that maps it to root outside. On
 * failure it says why on stderr ("offload-sandbox: ...") and exits 127.
 *
 * Why it exists: the host starts processes with clone(CLONE_VM | CLONE_VFORK) so that a large
 * host (a GTK app) never copies its page tables; but a CLONE_VM child records the host's
 * high-water resident memory into its own ru_maxrss when it calls execve, so a processor's
 * reported peak was the host's. The guard's own peak is polluted the same way, but the
 * processor is forked from the guard, a process of a few pages, so its peak is its own. And
 * being a subreaper per job is what lets "every process a job started is gone when it ends"
 * hold without a cgroup.
 *
 * It is built without a C library on x86-64 and AArch64 (raw system calls: its own exec then
 * costs ~0.2 ms instead of ~0.6 ms for a static glibc binary), and against the C library
 * elsewhere (or with -DGUARD_LIBC).
 */

#include <asm/unistd.h>
#include <linux/signal.h>
#include <linux/signalfd.h>
#include <linux/fcntl.h>
#include <linux/prctl.h>
#include <linux/wait.h>

#if (defined(__x86_64__) || defined(__aarch64__)) && !defined(GUARD_LIBC)
#define GUARD_NOLIBC 1
#endif

typedef long word;

/* ---- system calls ------------------------------------------------------------------------ */

#ifdef GUARD_NOLIBC
#if defined(__x86_64__)
static word sys6(word n, word a, word b, word c, word d, word e, word f) {
    word r;
    register word r10 __asm__("r10") = d;
    register word r8 __asm__("r8") = e;
    register word r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}
#elif defined(__aarch64__)
static word sys6(word n, word a, word b, word c, word d, word e, word f) {
    register word x8 __asm__("x8") = n;
    register word x0 __asm__("x0") = a;
    register word x1 __asm__("x1") = b;
    register word x2 __asm__("x2") = c;
    register word x3 __asm__("x3") = d;
    register word x4 __asm__("x4") = e;
    register word x5 __asm__("x5") = f;
    __asm__ volatile("svc #0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory", "cc");
    return x0;
}
#endif
/* The kernel returns -errno. */
#define ERR(r) ((unsigned long)(r) > (unsigned long)-4096L)
#define ERRNO(r) ((int)-(r))
#else
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
static word sys6(word n, word a, word b, word c, word d, word e, word f) {
    word r = syscall(n, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}
#define ERR(r) ((r) < 0)
#define ERRNO(r) ((int)-(r))
#endif

#define SYS(n, a, b, c, d, e, f) sys6(__NR_##n, (word)(a), (word)(b), (word)(c), (word)(d), (word)(e), (word)(f))

/* The compiler may emit calls to these even in freestanding code. */
#ifdef GUARD_NOLIBC
void *memset(void *s, int c, unsigned long n) {
    unsigned char *p = s;
    while (n--)
        *p++ = (unsigned char)c;
    return s;
}
void *memcpy(void *d, const void *s, unsigned long n) {
    unsigned char *a = d;
    const unsigned char *b = s;
    while (n--)
        *a++ = *b++;
    return d;
}
#endif

/* struct rusage: two timevals then fourteen longs; ru_maxrss is the first long. */
struct usage {
    word utime[2];
    word stime[2];
    word maxrss;
    word rest[13];
};

__attribute__((noreturn)) static void exit_now(int code) {
    for (;;)
        SYS(exit_group, code, 0, 0, 0, 0, 0);
}

/* ---- status lines ------------------------------------------------------------------------ */

static int status_fd = -1;

static void say(const char *what, unsigned long number) {
    char line[64];
    int n = 0;
    while (*what && n < 40)
        line[n++] = *what++;
    line[n++] = ' ';
    char digits[24];
    int d = 0;
    do {
        digits[d++] = (char)('0' + number % 10);
        number /= 10;
    } while (number && d < 24);
    while (d)
        line[n++] = digits[--d];
    line[n++] = '\n';
    for (int sent = 0; sent < n;) {
        word r = SYS(write, status_fd, line + sent, n - sent, 0, 0, 0);
        if (ERR(r)) {
            if (ERRNO(r) == 4 /* EINTR */)
                continue;
            return;
        }
        sent += (int)r;
    }
}

static int same(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static unsigned long parse(const char *s) {
    unsigned long n = 0;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (unsigned long)(*s++ - '0');
    return n;
}

/* ---- killing what is left ---------------------------------------------------------------- */

/* SIGKILLs every process whose parent is `self` (found in /proc: the children list of
 * /proc/PID/task/TID/children is not always built in). Returns how many it found. */
static int kill_children(word self) {
    int dir = (int)SYS(openat, AT_FDCWD, "/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, 0, 0);
    if (dir < 0)
        return 0;
    int found = 0;
    char buf[4096];
    for (;;) {
        word n = SYS(getdents64, dir, buf, sizeof buf, 0, 0, 0);
        if (n <= 0)
            break;
        for (word at = 0; at < n;) {
            /* struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name */
            unsigned short reclen = *(unsigned short *)(buf + at + 16);
            const char *name = buf + at + 19;
            at += reclen;
            if (*name < '1' || *name > '9')
                continue;
            char path[64] = "/proc/";
            int p = 6;
            for (const char *c = name; *c && p < 50; c++)
                path[p++] = *c;
            const char *tail = "/stat";
            while (*tail)
                path[p++] = *tail++;
            path[p] = 0;
            int fd = (int)SYS(openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0, 0, 0);
            if (fd < 0)
                continue;
            char stat[512];
            word len = SYS(read, fd, stat, sizeof stat - 1, 0, 0, 0);
            SYS(close, fd, 0, 0, 0, 0, 0);
            if (len <= 0)
                continue;
            stat[len] = 0;
            /* "pid (comm) state ppid ...": the command may hold spaces and parentheses. */
            char *close = 0;
            for (char *c = stat; *c; c++)
                if (*c == ')')
                    close = c;
            if (!close || !close[1] || !close[2] || !close[3])
                continue;
            if ((word)parse(close + 4) == self) {
                SYS(kill, (word)parse(name), SIGKILL, 0, 0, 0, 0);
                found++;
            }
        }
    }
    SYS(close, dir, 0, 0, 0, 0, 0);
    return found;
}

/* ---- the sandbox's privilege drop ---------------------------------------------------------- */

static void complain(const char *what, const char *detail, word err) {
    const char *prefix = "offload-sandbox: ";
    char line[512];
    int n = 0;
    while (*prefix && n < 100)
        line[n++] = *prefix++;
    while (*what && n < 200)
        line[n++] = *what++;
    while (detail && *detail && n < 440)
        line[n++] = *detail++;
    const char *tail = " (errno ";
    while (*tail)
        line[n++] = *tail++;
    char digits[24];
    int d = 0;
    unsigned long e = (unsigned long)err;
    do {
        digits[d++] = (char)('0' + e % 10);
        e /= 10;
    } while (e && d < 24);
    while (d)
        line[n++] = digits[--d];
    line[n++] = ')';
    line[n++] = '\n';
    SYS(write, 2, line, n, 0, 0, 0);
}

__attribute__((noreturn)) static void exec_as(word argc, char **argv, char **envp) {
    /* argv: offload-guard --exec-as UID GID SELF_FD PROGRAM [ARG...] */
    if (argc < 6) {
        complain("--exec-as takes UID GID SELF_FD PROGRAM", 0, 22);
        exit_now(127);
    }
    word uid = (word)parse(argv[2]), gid = (word)parse(argv[3]);
    int self_fd = (int)parse(argv[4]);
    char **program = argv + 5;
    /* Every capability out of the bounding set first (this needs CAP_SETPCAP, held until the
     * uid changes), so that nothing can bring one back. */
    for (word cap = 0; cap < 64; cap++) {
        word r = SYS(prctl, PR_CAPBSET_DROP, cap, 0, 0, 0, 0);
        if (ERR(r) && ERRNO(r) == 22 /* EINVAL: no such capability */)
            break;
        if (ERR(r)) {
            complain("cannot drop a capability from the bounding set", 0, ERRNO(r));
            exit_now(127);
        }
    }
    word r = SYS(setgroups, 0, 0, 0, 0, 0, 0);
    if (!ERR(r))
        r = SYS(setresgid, gid, gid, gid, 0, 0, 0);
    if (!ERR(r))
        r = SYS(setresuid, uid, uid, uid, 0, 0, 0);
    if (ERR(r)) {
        complain("cannot become an unprivileged user", 0, ERRNO(r));
        exit_now(127);
    }
    if (SYS(getuid, 0, 0, 0, 0, 0, 0) != uid || SYS(geteuid, 0, 0, 0, 0, 0, 0) != uid ||
        SYS(getgid, 0, 0, 0, 0, 0, 0) != gid) {
        complain("the user did not change", 0, 1);
        exit_now(127);
    }
    SYS(close, self_fd, 0, 0, 0, 0, 0);
    r = SYS(execve, program[0], program, envp, 0, 0, 0);
    complain("cannot execute ", program[0], ERRNO(r));
    exit_now(127);
}

/* ---- the guard ---------------------------------------------------------------------------- */

__attribute__((noreturn)) static void guard_main(word argc, char **argv, char **envp) {
    if (argc >= 2 && same(argv[1], "--exec-as"))
        exec_as(argc, argv, envp);
    if (argc < 3)
        exit_now(125);
    status_fd = (int)parse(argv[1]);
    char **program = argv + 2;
    const char *cgroup = 0;
    if (argc >= 5 && same(program[0], "--cgroup")) {
        cgroup = program[1];
        program += 2;
    }
    word self = SYS(getpid, 0, 0, 0, 0, 0, 0);

    /* Every signal it acts on arrives through a signalfd, never a handler. */
    unsigned long mask = (1UL << (SIGTERM - 1)) | (1UL << (SIGUSR2 - 1)) |
                         (1UL << (SIGCHLD - 1)) | (1UL << (SIGINT - 1)) |
                         (1UL << (SIGHUP - 1)) | (1UL << (SIGPIPE - 1));
    unsigned long old = 0;
    SYS(rt_sigprocmask, SIG_BLOCK, &mask, &old, sizeof mask, 0, 0);
    int sfd = (int)SYS(signalfd4, -1, &mask, sizeof mask, O_CLOEXEC, 0, 0);
    if (sfd < 0)
        exit_now(125);
    SYS(prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, 0);
    /* Executed from a memfd, it would be called by the descriptor's number in ps. */
    SYS(prctl, PR_SET_NAME, "offload-guard", 0, 0, 0, 0);
    /* A core of the guard is never wanted, not even when it mirrors the processor's crash. */
    SYS(prctl, PR_SET_DUMPABLE, 0, 0, 0, 0, 0);

    int err[2];
    if (ERR(SYS(pipe2, err, O_CLOEXEC, 0, 0, 0, 0)))
        exit_now(125);
    word child = SYS(clone, SIGCHLD, 0, 0, 0, 0, 0);
    if (ERR(child)) {
        say("error", (unsigned long)ERRNO(child));
        exit_now(127);
    }
    if (child == 0) {
        /* The processor: its own session and group (no controlling terminal to inject input
         * into), dead when the guard dies, nothing of the guard's. */
        SYS(close, err[0], 0, 0, 0, 0, 0);
        SYS(setsid, 0, 0, 0, 0, 0, 0);
        SYS(prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0, 0);
        if (SYS(getppid, 0, 0, 0, 0, 0, 0) != self)
            exit_now(127);
        if (cgroup) {
            /* Into the job's cgroup: a negative code tells the guard it was this step. */
            char pid[24];
            int n = 0;
            word me = SYS(getpid, 0, 0, 0, 0, 0, 0);
            char digits[24];
            int d = 0;
            do {
                digits[d++] = (char)('0' + me % 10);
                me /= 10;
            } while (me && d < 24);
            while (d)
                pid[n++] = digits[--d];
            int fd = (int)SYS(openat, AT_FDCWD, cgroup, O_WRONLY | O_CLOEXEC, 0, 0, 0);
            word w = fd < 0 ? fd : SYS(write, fd, pid, n, 0, 0, 0);
            if (ERR(w)) {
                int code = -ERRNO(w);
                SYS(write, err[1], &code, sizeof code, 0, 0, 0);
                exit_now(127);
            }
            SYS(close, fd, 0, 0, 0, 0, 0);
        }
        SYS(close, status_fd, 0, 0, 0, 0, 0);
        SYS(rt_sigprocmask, SIG_SETMASK, &old, 0, sizeof old, 0, 0);
        word r = SYS(execve, program[0], program, envp, 0, 0, 0);
        int code = ERRNO(r);
        SYS(write, err[1], &code, sizeof code, 0, 0, 0);
        exit_now(127);
    }
    SYS(close, err[1], 0, 0, 0, 0, 0);
    int code = 0;
    word got;
    do
        got = SYS(read, err[0], &code, sizeof code, 0, 0, 0);
    while (ERR(got) && ERRNO(got) == 4);
    SYS(close, err[0], 0, 0, 0, 0, 0);
    /* The host's pipes (stdio, progress) are the processor's now: keep no copy, so that their
     * ends close when it ends; only the status pipe and the signalfd stay. */
    int low = status_fd < sfd ? status_fd : sfd, high = status_fd < sfd ? sfd : status_fd;
    if (low > 0)
        SYS(close_range, 0, low - 1, 0, 0, 0, 0);
    if (high > low + 1)
        SYS(close_range, low + 1, high - 1, 0, 0, 0, 0);
    SYS(close_range, high + 1, ~0U, 0, 0, 0, 0);
    if (got == (word)sizeof code) {
        struct usage usage;
        int ignored;
        SYS(wait4, child, &ignored, 0, &usage, 0, 0);
        if (code < 0)
            say("cgroup", (unsigned long)-code);
        else
            say("error", (unsigned long)code);
        exit_now(127);
    }
    say("pid", (unsigned long)child);

    int status = 0;
    word peak = 0;
    int ended = 0;
    while (!ended) {
        struct signalfd_siginfo info;
        word n = SYS(read, sfd, &info, sizeof info, 0, 0, 0);
        if (ERR(n)) {
            if (ERRNO(n) == 4)
                continue;
            exit_now(125);
        }
        switch (info.ssi_signo) {
        case SIGTERM:
        case SIGINT:
        case SIGHUP:
            SYS(kill, -child, info.ssi_signo, 0, 0, 0, 0);
            break;
        case SIGUSR2:
            SYS(kill, -child, SIGKILL, 0, 0, 0, 0);
            break;
        case SIGCHLD:
            for (;;) {
                struct usage usage;
                int s = 0;
                word pid = SYS(wait4, -1, &s, WNOHANG, &usage, 0, 0);
                if (pid <= 0)
                    break;
                if (usage.maxrss > peak)
                    peak = usage.maxrss;
                if (pid == child) {
                    status = s;
                    ended = 1;
                }
            }
            break;
        default:
            break;
        }
    }

    /* The processor is gone: kill what is left below the guard (its group, and whatever was
     * reparented here), until nothing is. With no child left at all, nothing is scanned. */
    for (;;) {
        int none = 0;
        for (;;) {
            struct usage usage;
            int ignored;
            word pid = SYS(wait4, -1, &ignored, WNOHANG, &usage, 0, 0);
            if (pid > 0) {
                if (usage.maxrss > peak)
                    peak = usage.maxrss;
                continue;
            }
            none = ERR(pid) && ERRNO(pid) == 10; /* ECHILD */
            break;
        }
        if (none)
            break;
        SYS(kill, -child, SIGKILL, 0, 0, 0, 0);
        kill_children(self);
        /* Wait for their SIGCHLD (briefly: orphans may still be arriving), then look again. */
        struct { word sec, nsec; } wait = {0, 10000000};
        struct { int fd; short events, revents; } p = {sfd, 1, 0};
        if (SYS(ppoll, &p, 1, &wait, 0, 0, 0) > 0) {
            struct signalfd_siginfo info;
            SYS(read, sfd, &info, sizeof info, 0, 0, 0);
        }
    }
    say("end", (unsigned long)peak);

    /* Exit as the processor did. */
    if ((status & 0x7f) == 0)
        exit_now((status >> 8) & 0xff);
    {
        /* Unblock that signal only: a SIGPIPE left pending (the host closed the status pipe)
         * must not be what the guard dies of. */
        int sig = status & 0x7f;
        unsigned long only = 1UL << (sig - 1);
        SYS(rt_sigprocmask, SIG_UNBLOCK, &only, 0, sizeof only, 0, 0);
        SYS(kill, self, sig, 0, 0, 0, 0);
        SYS(kill, self, SIGKILL, 0, 0, 0, 0);
    }
    exit_now(128);
}

#ifdef GUARD_NOLIBC
__attribute__((used)) void guard_start(word *sp) {
    word argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    guard_main(argc, argv, envp);
}
#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n xor %rbp, %rbp\n mov %rsp, %rdi\n and $-16, %rsp\n call guard_start\n hlt\n");
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n mov x0, sp\n bl guard_start\n brk #0\n");
#endif
#else
int main(int argc, char **argv, char **envp) {
    guard_main(argc, argv, envp);
}
#endif
