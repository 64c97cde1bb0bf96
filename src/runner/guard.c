/*
 * offload-guard: the small process between the host and its processor processes.
 *
 *     offload-guard --serve SOCKET_FD
 *
 * A host thread starts one (a vfork child of the host, its own process group, PR_SET_PDEATHSIG
 * SIGUSR2, /dev/null as stdio) and keeps it for its life: the guard runs that thread's
 * processors, one at a time, each for one request on SOCKET_FD, a Unix stream socket whose
 * other end is the host's. The messages are fixed-size structures (struct request and
 * struct report below; src/runner/guard.rs has their twins). For each RUN request, which
 * carries the processor's descriptors (SCM_RIGHTS) and the number each gets, its program,
 * arguments, environment, working directory, nice value, rlimits and cgroup, the guard forks
 * the processor in a new session (and so a new process group), then:
 *
 *  - Reports STARTED with its pid once it runs, or NO_EXEC (errno) if it could not be
 *    executed, or NO_CGROUP (errno) if it could not join its cgroup.
 *  - Takes TERM (forward SIGTERM to the processor's group) and KILL (SIGKILL the group) from
 *    the host; SIGTERM, SIGINT and SIGHUP sent to the guard are forwarded too.
 *  - Is a child subreaper (PR_SET_CHILD_SUBREAPER): a descendant that leaves the group (setsid,
 *    a double fork) is reparented here instead of to init, and when the processor ends, every
 *    process left below the guard is killed and reaped. None outlives its job.
 *  - Reports ENDED once nothing is left below it: the processor's wait status, the peak
 *    resident memory in KiB of the processor and of every descendant it or the guard reaped
 *    (wait4's ru_maxrss), and their CPU time.
 *
 * It ends when the host's end of the socket closes (the thread let it go, or the host died)
 * or on SIGUSR2 (its parent-death signal: the thread that started it ended), killing the job
 * it runs first. A processor dies with its guard (PR_SET_PDEATHSIG SIGKILL).
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
 * high-water resident memory into its own ru_maxrss when it calls execve (and a forked child
 * its parent's), so a processor's reported peak was the host's. The guard's own peak is
 * polluted the same way, but the processor is started from the guard, a process of a few pages
 * whose own high-water mark stays small, so its peak is its own. And being a subreaper per
 * job is what lets "every process a job started is gone when it ends" hold without a cgroup.
 *
 * Why it serves many jobs: a process per job between the host and the processor cost a
 * one-shot job ~0.3 ms (its exec, its exit and one more wake-up), a fifth of a trivial job;
 * starting the processor from a guard that is already there costs a clone. One job at a time
 * keeps "what is reparented here belongs to the job" true. On x86-64 that clone is
 * CLONE_VM | CLONE_VFORK on a stack of the guard's (start_shared below), as posix_spawn does:
 * a plain fork copied the guard's page tables, which the exec then tore down, and cost
 * ~0.16 ms of CPU a job more (perf stat, 3,000 jobs of /bin/cat). Elsewhere it forks.
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
#include <linux/resource.h>

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
#include <string.h>
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

/* ---- small helpers ----------------------------------------------------------------------- */

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

/* ---- the protocol (src/runner/guard.rs has the same structures) ----------------------------- */

#define MAX_FDS 16

/* Request kinds, host to guard. */
#define RUN 1u
#define TERM 2u
#define KILL 3u
/* Report kinds, guard to host. */
#define STARTED 1u
#define NO_EXEC 2u
#define NO_CGROUP 3u
#define ENDED 4u
/* Request limits. */
#define LIMIT_CPU 1u
#define LIMIT_DATA 2u

struct request {
    unsigned int kind;
    /* RUN only, from here on. */
    unsigned int fds;   /* descriptors attached (SCM_RIGHTS), in the order of targets */
    unsigned int bytes; /* bytes of NUL-terminated strings after this structure: */
    unsigned int argc;  /* the working directory, the cgroup.procs file ("": none), */
    unsigned int envc;  /* argc arguments (the program first), envc environment entries */
    unsigned int limits;
    int nice;           /* added to the guard's nice value */
    int unused;
    unsigned long long cpu_limit;  /* RLIMIT_CPU in seconds (SIGKILL a second later) */
    unsigned long long data_limit; /* RLIMIT_DATA in bytes */
    int targets[MAX_FDS];          /* the number each descriptor gets in the processor */
};

struct report {
    unsigned int kind;
    int value; /* STARTED: the pid; NO_EXEC, NO_CGROUP: an errno; ENDED: the wait status */
    unsigned long long peak_kib;
    unsigned long long cpu_us;
};

_Static_assert(sizeof(struct request) == 112, "struct request is shared with guard.rs");
_Static_assert(sizeof(struct report) == 24, "struct report is shared with guard.rs");

/* The kernel's struct msghdr and struct cmsghdr (its own layout, so with or without libc). */
struct io_vector {
    void *base;
    unsigned long len;
};
struct message {
    void *name;
    int name_len;
    struct io_vector *iov;
    unsigned long iov_len;
    void *control;
    unsigned long control_len;
    unsigned int flags;
};
struct control_head {
    unsigned long len;
    int level;
    int type;
};
#define SOL_SOCKET_ 1
#define SCM_RIGHTS_ 1
#define MSG_CTRUNC_ 0x8
#define MSG_NOSIGNAL_ 0x4000
#define MSG_CMSG_CLOEXEC_ 0x40000000

#define EINTR_ 4
#define ECHILD_ 10
#define EPROTO_ 71

/* ---- the guard ---------------------------------------------------------------------------- */

static int sock = -1;    /* to and from the host */
static int signals = -1; /* a signalfd: every signal the guard acts on arrives here */
static word self;

struct pollfd_ {
    int fd;
    short events, revents;
};

/* Reads exactly `n` bytes from the socket; 0 at its end (or an error). */
static int read_exactly(void *buf, unsigned long n) {
    char *at = buf;
    while (n) {
        word r = SYS(read, sock, at, n, 0, 0, 0);
        if (ERR(r) && ERRNO(r) == EINTR_)
            continue;
        if (r <= 0)
            return 0;
        at += r;
        n -= (unsigned long)r;
    }
    return 1;
}

static void send_report(unsigned int kind, int value, unsigned long long peak_kib,
                        unsigned long long cpu_us) {
    struct report report = {kind, value, peak_kib, cpu_us};
    const char *at = (const char *)&report;
    unsigned long left = sizeof report;
    while (left) {
        word r = SYS(sendto, sock, at, left, MSG_NOSIGNAL_, 0, 0);
        if (ERR(r) && ERRNO(r) == EINTR_)
            continue;
        if (ERR(r))
            return; /* the host is gone: the socket's end says so next */
        at += r;
        left -= (unsigned long)r;
    }
}

/* Receives the next request and the descriptors it carries (close-on-exec here). 0 at the end
 * of the stream: the host let the guard go, or died. */
static int receive(struct request *request, int *fds, unsigned int *count) {
    union {
        struct control_head head;
        char bytes[sizeof(struct control_head) + MAX_FDS * sizeof(int) + sizeof(long)];
    } control;
    struct io_vector iov = {request, sizeof *request};
    struct message message = {0, 0, &iov, 1, &control, sizeof control, 0};
    word n;
    do
        n = SYS(recvmsg, sock, &message, MSG_CMSG_CLOEXEC_, 0, 0, 0);
    while (ERR(n) && ERRNO(n) == EINTR_);
    *count = 0;
    if (ERR(n) || n == 0)
        return 0;
    if (message.control_len >= sizeof(struct control_head) &&
        control.head.level == SOL_SOCKET_ && control.head.type == SCM_RIGHTS_) {
        *count = (unsigned int)((control.head.len - sizeof(struct control_head)) / sizeof(int));
        memcpy(fds, control.bytes + sizeof(struct control_head), *count * sizeof(int));
    }
    /* More descriptors than a request may carry: the host is not offload's. */
    if (message.flags & MSG_CTRUNC_)
        exit_now(125);
    if ((unsigned long)n < sizeof *request &&
        !read_exactly((char *)request + n, sizeof *request - (unsigned long)n))
        return 0;
    return 1;
}

static unsigned long length(const char *s) {
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

/* Writes `number` in decimal to `out`; gives the number of digits. */
static int decimal(char *out, unsigned long number) {
    char digits[24];
    int d = 0, n = 0;
    do {
        digits[d++] = (char)('0' + number % 10);
        number /= 10;
    } while (number && d < 24);
    while (d)
        out[n++] = digits[--d];
    return n;
}

/* What the processor's side of the fork or clone reads, and where it says why it failed. */
struct start {
    const struct request *request;
    const int *fds;
    const char *cgroup;
    char **argv;
    char **envp;
    /* A pipe's write end (close-on-exec: the guard reads its end to EOF at the exec), or -1
     * when the child shares the guard's memory (CLONE_VM | CLONE_VFORK): then `code`. */
    int failed;
    volatile int code;
};

/* The processor's side of the clone or fork: its own session, dead when the guard dies, in its
 * cgroup, with its limits, nice value and descriptors, then PROGRAM. A failure goes to
 * `failed` or `code` as an errno (negative: the cgroup). */
__attribute__((noreturn)) static void processor(struct start *start) {
    const struct request *request = start->request;
    const int *fds = start->fds;
    const char *cgroup = start->cgroup;
    int failed = start->failed;
    int code = 0;
    SYS(setsid, 0, 0, 0, 0, 0, 0);
    SYS(prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0, 0);
    if (SYS(getppid, 0, 0, 0, 0, 0, 0) != self)
        exit_now(127);
    if (*cgroup) {
        char pid[24];
        int n = decimal(pid, (unsigned long)SYS(getpid, 0, 0, 0, 0, 0, 0));
        int fd = (int)SYS(openat, AT_FDCWD, cgroup, O_WRONLY | O_CLOEXEC, 0, 0, 0);
        word w = fd < 0 ? fd : SYS(write, fd, pid, n, 0, 0, 0);
        if (ERR(w)) {
            code = -ERRNO(w);
            goto fail;
        }
        SYS(close, fd, 0, 0, 0, 0, 0);
    }
    if (request->limits & LIMIT_CPU) {
        unsigned long long limit[2] = {request->cpu_limit, request->cpu_limit + 1};
        word r = SYS(prlimit64, 0, RLIMIT_CPU, limit, 0, 0, 0);
        if (ERR(r)) {
            code = ERRNO(r);
            goto fail;
        }
    }
    if (request->limits & LIMIT_DATA) {
        unsigned long long limit[2] = {request->data_limit, request->data_limit};
        word r = SYS(prlimit64, 0, RLIMIT_DATA, limit, 0, 0, 0);
        if (ERR(r)) {
            code = ERRNO(r);
            goto fail;
        }
    }
    if (request->nice) {
        /* Best effort, as nice(3): the raw getpriority gives 20 - nice. */
        word now = 20 - SYS(getpriority, PRIO_PROCESS, 0, 0, 0, 0, 0);
        word wanted = now + request->nice;
        wanted = wanted < -20 ? -20 : wanted > 19 ? 19 : wanted;
        SYS(setpriority, PRIO_PROCESS, 0, wanted, 0, 0, 0);
    }
    {
        /* Each descriptor to its number: first all of them (and `failed`) above every target, so
         * that none is overwritten before it is moved, then each to its place (dup2 clears
         * close-on-exec there; everything else here is close-on-exec). */
        int high = 3;
        for (unsigned int i = 0; i < request->fds; i++)
            if (request->targets[i] >= high)
                high = request->targets[i] + 1;
        int moved[MAX_FDS];
        for (unsigned int i = 0; i < request->fds; i++) {
            word fd = SYS(fcntl, fds[i], F_DUPFD_CLOEXEC, high, 0, 0, 0);
            if (ERR(fd)) {
                code = ERRNO(fd);
                goto fail;
            }
            moved[i] = (int)fd;
        }
        word moved_failed = failed < 0 ? -1 : SYS(fcntl, failed, F_DUPFD_CLOEXEC, high, 0, 0, 0);
        if (!ERR(moved_failed))
            failed = (int)moved_failed;
        for (unsigned int i = 0; i < request->fds; i++) {
            word r = SYS(dup3, moved[i], request->targets[i], 0, 0, 0, 0);
            if (ERR(r)) {
                code = ERRNO(r);
                goto fail;
            }
        }
    }
    {
        unsigned long none = 0;
        SYS(rt_sigprocmask, SIG_SETMASK, &none, 0, sizeof none, 0, 0);
    }
    code = ERRNO(SYS(execve, start->argv[0], start->argv, start->envp, 0, 0, 0));
fail:
    if (failed < 0)
        start->code = code ? code : EPROTO_;
    else
        SYS(write, failed, &code, sizeof code, 0, 0, 0);
    exit_now(127);
}

#if defined(__x86_64__) && defined(GUARD_NOLIBC)
/* Starting the processor as posix_spawn does: clone(CLONE_VM | CLONE_VFORK) on a stack of its
 * own, so that nothing of the guard is copied (a fork copied its page tables and the exec
 * then tore the copy down). The guard waits until the child has executed or exited; its
 * high-water memory, which the child's exec records as the processor's, is the guard's few
 * pages, as with a fork.
 *
 *     word start_shared(int (*fn)(void *), void *stack_top, word flags, void *arg)
 *
 * clone(flags, stack_top - 16) with fn and arg on the new stack; the child pops them, calls
 * fn(arg) and exits with its result (fn does not return: processor() executes or exits).
 * The parent gets clone's result. */
#define GUARD_SHARED_START 1
word start_shared(int (*fn)(void *), void *stack_top, word flags, void *arg);
__asm__(".text\n"
        ".type start_shared, @function\n"
        "start_shared:\n"
        " and $-16, %rsi\n"
        " sub $16, %rsi\n"
        " mov %rdi, (%rsi)\n"
        " mov %rcx, 8(%rsi)\n"
        " mov %rdx, %rdi\n"
        " xor %edx, %edx\n"
        " xor %r10d, %r10d\n"
        " xor %r8d, %r8d\n"
        " mov $56, %eax\n" /* __NR_clone: flags, stack, parent_tid, child_tid, tls */
        " syscall\n"
        " test %rax, %rax\n"
        " jnz 1f\n"
        " xor %ebp, %ebp\n"
        " pop %rax\n"
        " pop %rdi\n"
        " call *%rax\n"
        " mov %eax, %edi\n"
        " mov $60, %eax\n" /* __NR_exit */
        " syscall\n"
        " hlt\n"
        "1: ret\n"
        ".size start_shared, .-start_shared\n");

/* The child's stack until it executes (the guard is stopped meanwhile, one child at a time). */
static char child_stack[16 * 1024] __attribute__((aligned(16)));

static int processor_entry(void *start) {
    processor(start);
}
#endif

/* The working directory the guard last moved to (the processor inherits it). */
static char cwd_now[4096];

static void enter(const char *cwd) {
    if (!*cwd)
        return;
    unsigned long n = length(cwd);
    if (n < sizeof cwd_now && same(cwd, cwd_now))
        return;
    if (!ERR(SYS(chdir, cwd, 0, 0, 0, 0, 0)) && n < sizeof cwd_now)
        memcpy(cwd_now, cwd, n + 1);
    else
        cwd_now[0] = 0;
}

/* Requests' strings, and pointers to them, for all but very large requests (the host lets a
 * guard that took a larger one go after that job, as its high-water memory grew). */
static char small_strings[64 * 1024];
static char *small_pointers[4096];

/* What the guard does after a job: serve the next one, or end. */
enum after { NEXT, LEAVE };

/* Runs one job: the request, its descriptors (`count` of them) and its strings. */
static enum after run(const struct request *request, int *fds, unsigned int count) {
    enum after after = NEXT;
    char *strings = small_strings;
    char **pointers = small_pointers;
    unsigned long pointer_bytes = (request->argc + request->envc + 2UL) * sizeof(char *);
    unsigned long mapped = 0;
    if (request->bytes > sizeof small_strings || pointer_bytes > sizeof small_pointers) {
        mapped = request->bytes + pointer_bytes;
        word at = SYS(mmap, 0, mapped, 3 /* PROT_READ | PROT_WRITE */,
                      0x22 /* MAP_PRIVATE | MAP_ANONYMOUS */, -1, 0);
        if (ERR(at))
            exit_now(125);
        pointers = (char **)at;
        strings = (char *)at + pointer_bytes;
    }
    if (count != request->fds || request->argc < 1 || request->bytes > (256UL << 20) ||
        !read_exactly(strings, request->bytes))
        exit_now(125);
    /* The strings, each NUL-terminated within the request. */
    char *at = strings, *end = strings + request->bytes;
    char *fields[2];
    unsigned long wanted = 2UL + request->argc + request->envc;
    for (unsigned long i = 0; i < wanted; i++) {
        char *start = at;
        while (at < end && *at)
            at++;
        if (at == end)
            exit_now(125);
        at++;
        if (i < 2)
            fields[i] = start;
        else if (i < 2 + request->argc)
            pointers[i - 2] = start;
        else
            pointers[i - 1] = start;
    }
    char **argv = pointers, **envp = pointers + request->argc + 1;
    argv[request->argc] = 0;
    envp[request->envc] = 0;
    enter(fields[0]);

    struct start start = {request, fds, fields[1], argv, envp, -1, 0};
    int code = 0;
    int start_failed = 0;
#ifdef GUARD_SHARED_START
    /* CLONE_VM | CLONE_VFORK | SIGCHLD: back here once the child has executed or exited. */
    word child = start_shared(processor_entry, child_stack + sizeof child_stack,
                              0x100 | 0x4000 | SIGCHLD, &start);
    code = start.code;
    start_failed = code != 0;
#else
    int failed[2];
    if (ERR(SYS(pipe2, failed, O_CLOEXEC, 0, 0, 0, 0)))
        exit_now(125);
    start.failed = failed[1];
    word child = SYS(clone, SIGCHLD, 0, 0, 0, 0, 0);
    if (child == 0) {
        SYS(close, failed[0], 0, 0, 0, 0, 0);
        processor(&start);
    }
    SYS(close, failed[1], 0, 0, 0, 0, 0);
    if (!ERR(child)) {
        word got;
        do
            got = SYS(read, failed[0], &code, sizeof code, 0, 0, 0);
        while (ERR(got) && ERRNO(got) == EINTR_);
        start_failed = got == (word)sizeof code;
    }
    SYS(close, failed[0], 0, 0, 0, 0, 0);
#endif
    /* The processor's descriptors are its own now: keep no copy, so that they close when it
     * ends. */
    for (unsigned int i = 0; i < count; i++)
        SYS(close, fds[i], 0, 0, 0, 0, 0);
    if (mapped)
        SYS(munmap, pointers, mapped, 0, 0, 0, 0);
    if (ERR(child)) {
        send_report(NO_EXEC, ERRNO(child), 0, 0);
        return NEXT;
    }
    if (start_failed) {
        int ignored;
        SYS(wait4, child, &ignored, 0, 0, 0, 0);
        if (code < 0)
            send_report(NO_CGROUP, -code, 0, 0);
        else
            send_report(NO_EXEC, code, 0, 0);
        return NEXT;
    }
    send_report(STARTED, (int)child, 0, 0);

    int status = 0;
    word peak = 0;
    unsigned long long cpu_us = 0;
    int ended = 0;
    while (!ended) {
        struct pollfd_ ready[2] = {{signals, 1 /* POLLIN */, 0}, {sock, 1, 0}};
        /* Once the host is gone, only the signals matter. */
        word n = SYS(ppoll, ready, after == LEAVE ? 1 : 2, 0, 0, 0, 0);
        if (ERR(n)) {
            if (ERRNO(n) == EINTR_)
                continue;
            exit_now(125);
        }
        if (ready[1].revents) {
            struct request command;
            int extra[MAX_FDS];
            unsigned int extras = 0;
            if (!receive(&command, extra, &extras)) {
                /* The host let go of this guard, or died: the job goes with it. */
                SYS(kill, -child, SIGKILL, 0, 0, 0, 0);
                after = LEAVE;
            } else if (command.kind == TERM) {
                SYS(kill, -child, SIGTERM, 0, 0, 0, 0);
            } else if (command.kind == KILL) {
                SYS(kill, -child, SIGKILL, 0, 0, 0, 0);
            } else {
                exit_now(125); /* one job at a time */
            }
            for (unsigned int i = 0; i < extras; i++)
                SYS(close, extra[i], 0, 0, 0, 0, 0);
        }
        if (!ready[0].revents)
            continue;
        struct signalfd_siginfo info;
        word r = SYS(read, signals, &info, sizeof info, 0, 0, 0);
        if (ERR(r))
            continue;
        switch (info.ssi_signo) {
        case SIGTERM:
        case SIGINT:
        case SIGHUP:
            SYS(kill, -child, info.ssi_signo, 0, 0, 0, 0);
            break;
        case SIGUSR2:
            /* The host's thread ended: the job goes, and so does the guard. */
            SYS(kill, -child, SIGKILL, 0, 0, 0, 0);
            after = LEAVE;
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
                cpu_us += (unsigned long long)(usage.utime[0] + usage.stime[0]) * 1000000ULL +
                          (unsigned long long)(usage.utime[1] + usage.stime[1]);
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
                cpu_us += (unsigned long long)(usage.utime[0] + usage.stime[0]) * 1000000ULL +
                          (unsigned long long)(usage.utime[1] + usage.stime[1]);
                continue;
            }
            none = ERR(pid) && ERRNO(pid) == ECHILD_;
            break;
        }
        if (none)
            break;
        SYS(kill, -child, SIGKILL, 0, 0, 0, 0);
        kill_children(self);
        /* Wait for their SIGCHLD (briefly: orphans may still be arriving), then look again. */
        struct { word sec, nsec; } wait = {0, 10000000};
        struct pollfd_ p = {signals, 1, 0};
        if (SYS(ppoll, &p, 1, &wait, 0, 0, 0) > 0) {
            struct signalfd_siginfo info;
            SYS(read, signals, &info, sizeof info, 0, 0, 0);
            if (info.ssi_signo == SIGUSR2)
                after = LEAVE;
        }
    }
    send_report(ENDED, status, (unsigned long long)peak, cpu_us);
    return after;
}

/* Serves the host's requests until it lets go. */
__attribute__((noreturn)) static void serve(int socket_fd) {
    sock = socket_fd;
    self = SYS(getpid, 0, 0, 0, 0, 0, 0);
    unsigned long blocked = (1UL << (SIGTERM - 1)) | (1UL << (SIGUSR2 - 1)) | (1UL << (SIGCHLD - 1)) |
              (1UL << (SIGINT - 1)) | (1UL << (SIGHUP - 1)) | (1UL << (SIGPIPE - 1));
    SYS(rt_sigprocmask, SIG_BLOCK, &blocked, 0, sizeof blocked, 0, 0);
    signals = (int)SYS(signalfd4, -1, &blocked, sizeof blocked, O_CLOEXEC, 0, 0);
    if (signals < 0)
        exit_now(125);
    SYS(fcntl, sock, F_SETFD, FD_CLOEXEC, 0, 0, 0);
    SYS(prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, 0);
    /* Executed from a memfd, it would be called by the descriptor's number in ps. */
    SYS(prctl, PR_SET_NAME, "offload-guard", 0, 0, 0, 0);
    /* A core of the guard is never wanted. */
    SYS(prctl, PR_SET_DUMPABLE, 0, 0, 0, 0, 0);
    for (;;) {
        struct pollfd_ ready[2] = {{signals, 1, 0}, {sock, 1, 0}};
        word n = SYS(ppoll, ready, 2, 0, 0, 0, 0);
        if (ERR(n)) {
            if (ERRNO(n) == EINTR_)
                continue;
            exit_now(125);
        }
        if (ready[0].revents) {
            struct signalfd_siginfo info;
            word r = SYS(read, signals, &info, sizeof info, 0, 0, 0);
            /* Between jobs, a stop of any kind ends the guard; a SIGCHLD has nothing left to
             * reap (every job's processes were reaped before its end was reported). */
            if (!ERR(r) && info.ssi_signo != SIGCHLD && info.ssi_signo != SIGPIPE)
                exit_now(0);
        }
        if (!ready[1].revents)
            continue;
        struct request request;
        int fds[MAX_FDS];
        unsigned int count = 0;
        if (!receive(&request, fds, &count))
            exit_now(0);
        if (request.kind == RUN) {
            if (run(&request, fds, count) == LEAVE)
                exit_now(0);
            continue;
        }
        /* TERM or KILL for a job that has ended meanwhile: nothing to do. */
        for (unsigned int i = 0; i < count; i++)
            SYS(close, fds[i], 0, 0, 0, 0, 0);
    }
}

__attribute__((noreturn)) static void guard_main(word argc, char **argv, char **envp) {
    if (argc >= 2 && same(argv[1], "--exec-as"))
        exec_as(argc, argv, envp);
    if (argc == 3 && same(argv[1], "--serve"))
        serve((int)parse(argv[2]));
    exit_now(125);
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
