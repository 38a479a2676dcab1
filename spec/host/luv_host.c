/* A Lua host that handles luv's callback errors as an editor does: it
 * reports each one and lets the loop go on (luv's own handler prints and
 * exits). Specs run programs under it to see that csm, on luv's loop,
 * reports its callbacks' errors through that handler too.
 *
 * Usage: csm_luv_host program.lua [args...]; host_errors() in the program
 * returns how many callback errors the handler saw. */
#include <dlfcn.h>
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

typedef int (*luv_pcall_fn)(lua_State *L, int nargs, int nresults, int flags);

static int errors;

/* luv_CFpcall (luv.h): pops the function and its arguments, leaves its
 * results and returns their count, or returns -status after an error. */
static int host_pcall(lua_State *L, int nargs, int nresults, int flags)
{
    (void)flags;
    int base = lua_gettop(L) - nargs - 1;
    int status = lua_pcall(L, nargs, nresults, 0);
    if (status != 0) {
        fprintf(stderr, "host: a callback raised: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        errors++;
        return -status;
    }
    return lua_gettop(L) - base;
}

static int host_errors(lua_State *L)
{
    lua_pushinteger(L, errors);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s program.lua [args...]\n", argv[0]);
        return 2;
    }
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, "return package.searchpath('luv', package.cpath)") != 0 ||
        !lua_isstring(L, -1)) {
        fprintf(stderr, "host: luv not found on package.cpath\n");
        return 2;
    }
    /* the same file require "luv" loads, so the same luv */
    void *luv = dlopen(lua_tostring(L, -1), RTLD_NOW | RTLD_LOCAL);
    lua_pop(L, 1);
    void (*set_callback)(lua_State *, luv_pcall_fn) =
        luv ? (void (*)(lua_State *, luv_pcall_fn))dlsym(luv, "luv_set_callback") : NULL;
    if (set_callback == NULL) {
        fprintf(stderr, "host: luv_set_callback not found: %s\n", dlerror());
        return 2;
    }
    set_callback(L, host_pcall); /* before require "luv": luaopen_luv keeps it */
    lua_register(L, "host_errors", host_errors);
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    int status = luaL_dofile(L, argv[1]);
    if (status != 0)
        fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return status == 0 ? 0 : 1;
}
