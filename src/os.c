/* csm.core.os: what luv lacks for a node's store. lock(path) holds an
 * exclusive flock on path for the life of the handle it returns, so two
 * processes (or two handles of one) cannot share a directory. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "private.h"

#define CSM_LOCK_MT "csm.os.lock"

typedef struct csm_lock {
    int fd; /* -1 once closed */
} csm_lock;

/* The one close every path reaches: closing the fd drops the flock. */
static void lock_close(csm_lock *lk)
{
    if (lk->fd >= 0) {
        close(lk->fd);
        lk->fd = -1;
    }
}

static csm_lock *check_lock(lua_State *L, const char *fname)
{
    csm_lock *lk = luaL_testudata(L, 1, CSM_LOCK_MT);
    if (lk == NULL)
        csm_selferror(L, 1, fname, "csm lock expected");
    return lk;
}

/* os.lock(path) -> handle | nil, message, code ("locked": another process
 * or handle holds it; "io": the file cannot be opened or locked). */
static int os_lock(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return csm_argerror(L, 1, "os.lock", 1, "path", "string expected");
    size_t n;
    const char *path = lua_tolstring(L, 1, &n);
    if (strlen(path) != n)
        return csm_argerror(L, 1, "os.lock", 1, "path", "string without zero bytes expected");
    /* the userdata first, so that no fd is left open if it cannot be made */
    csm_lock *lk = lua_newuserdata(L, sizeof *lk);
    lk->fd = -1;
    luaL_getmetatable(L, CSM_LOCK_MT);
    lua_setmetatable(L, -2);
    int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        lua_pushstring(L, "io");
        return 3;
    }
    lk->fd = fd;
    int r;
    do
        r = flock(fd, LOCK_EX | LOCK_NB);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        lock_close(lk);
        lua_pushnil(L);
        if (e == EWOULDBLOCK) {
            lua_pushfstring(L, "%s: locked by another process or handle", path);
            lua_pushstring(L, "locked");
        } else {
            lua_pushfstring(L, "%s: %s", path, strerror(e));
            lua_pushstring(L, "io");
        }
        return 3;
    }
    return 1;
}

/* handle:unlock() -> true: releases the lock (idempotent). */
static int lock_unlock(lua_State *L)
{
    lock_close(check_lock(L, "lock:unlock"));
    lua_pushboolean(L, 1);
    return 1;
}

/* handle:locked() -> boolean: whether the handle still holds the lock. */
static int lock_locked(lua_State *L)
{
    lua_pushboolean(L, check_lock(L, "lock:locked")->fd >= 0);
    return 1;
}

static int lock_gc(lua_State *L)
{
    csm_lock *lk = luaL_testudata(L, 1, CSM_LOCK_MT);
    if (lk != NULL)
        lock_close(lk);
    return 0;
}

static int lock_tostring(lua_State *L)
{
    csm_lock *lk = check_lock(L, "lock:__tostring");
    lua_pushfstring(L, "csm.os.lock (%s)", lk->fd >= 0 ? "held" : "released");
    return 1;
}

static const luaL_Reg lock_methods[] = {
    {"unlock", lock_unlock},
    {"locked", lock_locked},
    {NULL, NULL},
};

static const luaL_Reg lock_metamethods[] = {
    {"__gc", lock_gc},
    {"__close", lock_gc},
    {"__tostring", lock_tostring},
    {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"lock", os_lock},
    {NULL, NULL},
};

void csm_open_os(lua_State *L)
{
    if (luaL_newmetatable(L, CSM_LOCK_MT)) {
        luaL_setfuncs(L, lock_metamethods, 0);
        lua_newtable(L);
        luaL_setfuncs(L, lock_methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_setfuncs(L, functions, 0);
    lua_setfield(L, -2, "os");
}
