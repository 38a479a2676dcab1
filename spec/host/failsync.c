/* An LD_PRELOAD shim for the specs of a node whose disk stops syncing:
 * with CSM_FAIL_SYNC=N in the environment, the N-th call of fdatasync or
 * fsync (both counted together) and every later one fail with EIO without
 * reaching the disk; without it, both call the C library's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>

typedef int (*sync_fn)(int);

/* Counted across threads: libuv runs fdatasync on its thread pool. */
static long calls;

/* Whether this call is one that must fail. */
static int must_fail(void)
{
    const char *n = getenv("CSM_FAIL_SYNC");
    long call = __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    if (n == NULL || *n == '\0')
        return 0;
    char *end;
    long from = strtol(n, &end, 10);
    return *end == '\0' && from > 0 && call >= from;
}

static int forward(const char *name, int fd)
{
    sync_fn real = (sync_fn)dlsym(RTLD_NEXT, name);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(fd);
}

int fdatasync(int fd)
{
    if (must_fail()) {
        errno = EIO;
        return -1;
    }
    return forward("fdatasync", fd);
}

int fsync(int fd)
{
    if (must_fail()) {
        errno = EIO;
        return -1;
    }
    return forward("fsync", fd);
}
