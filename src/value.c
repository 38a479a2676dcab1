/* csm.value: identity and rank held in C, an optional Lua payload. */
#include <stdio.h>
#include <string.h>

#include "private.h"

/***
 * @module csm
 */

csm_value *csm_test_value(lua_State *L, int idx)
{
    return csm_testudata(L, idx, CSM_UP_VALUE_MT, CSM_VALUE_MT);
}

csm_value *csm_check_value(lua_State *L, int idx, const char *fname, int n, const char *name)
{
    csm_value *v = csm_test_value(L, idx);
    if (v == NULL)
        csm_argerror(L, idx, fname, n, name, "csm value expected");
    return v;
}

const char *csm_check_identity(lua_State *L, int idx, const char *fname, int n,
                               const char *name, size_t *len)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, idx, len);
        if (*len == 0)
            csm_argerror(L, idx, fname, n, name, "csm value or non-empty string expected");
        return s;
    }
    csm_value *v = csm_test_value(L, idx);
    if (v == NULL)
        csm_argerror(L, idx, fname, n, name, "csm value or non-empty string expected");
    *len = v->len;
    return v->identity;
}

csm_value *csm_push_value(lua_State *L, const char *identity, size_t len, uint64_t rank,
                          int payload_idx)
{
    if (payload_idx != 0)
        payload_idx = lua_absindex(L, payload_idx);
    csm_value *v = csm_newuserdata(L, csm_value_size(len));
    v->rank = rank;
    v->len = len;
    v->has_payload = 0;
    memcpy(v->identity, identity, len);
    v->identity[len] = '\0';
    csm_setmetatable(L, CSM_UP_VALUE_MT, CSM_VALUE_MT);
    if (payload_idx != 0 && !lua_isnil(L, payload_idx)) {
        lua_pushvalue(L, payload_idx);
        csm_setuservalue(L, -2);
        v->has_payload = 1;
    }
    return v;
}

/* csm.value(identity, rank [, payload]) */
static int value_new(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING || lua_rawlen(L, 1) == 0)
        return csm_argerror(L, 1, "csm.value", 1, "identity", "non-empty string expected");
    size_t len;
    const char *identity = lua_tolstring(L, 1, &len);
    uint64_t rank = csm_check_rank(L, 2, "csm.value", 2, "rank");
    csm_push_value(L, identity, len, rank, lua_gettop(L) >= 3 ? 3 : 0);
    return 1;
}

/* csm.peer(identity): a value of rank 0. */
static int value_peer(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING || lua_rawlen(L, 1) == 0)
        return csm_argerror(L, 1, "csm.peer", 1, "identity", "non-empty string expected");
    size_t len;
    const char *identity = lua_tolstring(L, 1, &len);
    csm_push_value(L, identity, len, 0, 0);
    return 1;
}

static int value_is(lua_State *L)
{
    lua_pushboolean(L, csm_test_value(L, 1) != NULL);
    return 1;
}

void csm_push_clone(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    csm_value *v = lua_touserdata(L, idx);
    if (!v->has_payload) {
        csm_push_value(L, v->identity, v->len, v->rank, 0);
        return;
    }
    csm_getuservalue(L, idx);
    if (lua_istable(L, -1)) {
        /* one level deep: a new table with the same fields and metatable,
         * sized once (counting first is cheaper than growing it) */
        int src = lua_gettop(L);
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, src) != 0) {
            n++;
            lua_pop(L, 1);
        }
        int narr = (int)lua_rawlen(L, src);
        lua_createtable(L, narr, n > narr ? n - narr : 0);
        lua_pushnil(L);
        while (lua_next(L, src) != 0) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        if (lua_getmetatable(L, src))
            lua_setmetatable(L, -2);
        lua_remove(L, src);
    }
    csm_push_value(L, v->identity, v->len, v->rank, -1);
    lua_remove(L, -2);
}

static csm_value *self(lua_State *L, const char *fname)
{
    csm_value *v = csm_test_value(L, 1);
    if (v == NULL)
        csm_selferror(L, 1, fname, "csm value expected");
    return v;
}

/*** A value's identity: a non-empty string of any bytes.
 * @type value
 */

/*** The value's identity.
 * @function value:identity
 * @treturn string
 */
static int value_identity(lua_State *L)
{
    csm_value *v = self(L, "value:identity");
    lua_pushlstring(L, v->identity, v->len);
    return 1;
}

/*** The value's rank.
 * @function value:rank
 * @treturn integer
 */
static int value_rank(lua_State *L)
{
    csm_value *v = self(L, "value:rank");
    csm_push_rank(L, v->rank);
    return 1;
}

/*** A new value with the same identity and rank; a table payload is copied
 * one level deep, another payload is shared.
 * @function value:clone
 */
static int value_clone(lua_State *L)
{
    self(L, "value:clone");
    csm_push_clone(L, 1);
    return 1;
}

/*** value.payload is the payload; value.field is payload.field when the
 * payload is a table. Values are read-only.
 * @field payload
 */
static int value_index(lua_State *L)
{
    csm_value *v = lua_touserdata(L, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(CSM_NUPVALUES + 1));
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    if (!v->has_payload) {
        lua_pushnil(L);
        return 1;
    }
    csm_getuservalue(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "payload") == 0)
        return 1;
    if (!lua_istable(L, -1)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, -2);
    return 1;
}

static int value_newindex(lua_State *L)
{
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2);
    return csm_error(L, "csm value is read-only (field '%s')", key);
}

static int value_eq(lua_State *L)
{
    csm_value *a = csm_test_value(L, 1), *b = csm_test_value(L, 2);
    lua_pushboolean(L, a != NULL && b != NULL && csm_value_equal(a, b));
    return 1;
}

/* csm.value("id", 3); bytes outside printable ASCII as \xNN, long ones cut. */
static int value_tostring(lua_State *L)
{
    csm_value *v = lua_touserdata(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "csm.value(\"");
    size_t shown = v->len > 64 ? 64 : v->len;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)v->identity[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            luaL_addchar(&b, (char)c);
        } else {
            char hex[5];
            snprintf(hex, sizeof hex, "\\x%02x", c);
            luaL_addstring(&b, hex);
        }
    }
    if (shown < v->len)
        luaL_addstring(&b, "...");
    char tail[32];
    snprintf(tail, sizeof tail, "\", %llu)", (unsigned long long)v->rank);
    luaL_addstring(&b, tail);
    luaL_pushresult(&b);
    return 1;
}

static const luaL_Reg methods[] = {
    {"identity", value_identity},
    {"rank", value_rank},
    {"clone", value_clone},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__newindex", value_newindex},
    {"__eq", value_eq},
    {"__tostring", value_tostring},
    {NULL, NULL},
};

static const luaL_Reg constructors[] = {
    {"value", value_new},
    {"peer", value_peer},
    {"is_value", value_is},
    {NULL, NULL},
};

void csm_open_value(lua_State *L, int first)
{
    csm_setfuncs(L, constructors);
    if (!first)
        return;
    luaL_getmetatable(L, CSM_VALUE_MT);
    csm_setfuncs(L, metamethods);
    lua_newtable(L);
    csm_setfuncs(L, methods);
    /* csm's upvalues, then the methods */
    csm_push_upvalues(L);
    lua_pushvalue(L, -1 - CSM_NUPVALUES);
    lua_pushcclosure(L, value_index, CSM_NUPVALUES + 1);
    lua_remove(L, -2);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, CSM_VALUE_MT);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}
