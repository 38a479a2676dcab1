/* csm.core.encode, csm.core.decode: the wire codec (core/codec.h) over Lua
 * data. Encoding walks a message with raw accesses into encoder calls (the
 * core sorts each map's pairs); decoding validates the whole frame into
 * tokens before it makes a single Lua object. */
#include <math.h>
#include <string.h>

#include "private.h"
#include "core/codec.h"

#define CSM_CODEC_STATE_MT "csm.codec.state"

/* The state upvalue of encode and decode (after csm's own upvalues). */
#define CSM_UP_STATE (CSM_NUPVALUES + 1)

/* An encoder and a decoder whose buffers one function reuses call after call. */
typedef struct codec_state {
    csm_encoder e;
    csm_decoder d;
} codec_state;

/* Buffers this large are given back after the call rather than kept. */
#define CSM_CODEC_KEEP 65536

static int state_gc(lua_State *L)
{
    codec_state *s = luaL_checkudata(L, 1, CSM_CODEC_STATE_MT);
    csm_encoder_free(&s->e);
    csm_decoder_free(&s->d);
    return 0;
}

static codec_state *new_state(lua_State *L)
{
    codec_state *s = lua_newuserdata(L, sizeof *s);
    void *ud;
    lua_Alloc alloc = lua_getallocf(L, &ud);
    csm_encoder_init(&s->e, (csm_codec_alloc)alloc, ud);
    csm_decoder_init(&s->d, (csm_codec_alloc)alloc, ud);
    if (luaL_newmetatable(L, CSM_CODEC_STATE_MT)) {
        lua_pushcfunction(L, state_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return s;
}

/* Takes the function's state out of its upvalue (a call that runs while
 * another holds it, from a finalizer say, gets a state of its own), and
 * pushes it; put_state gives it back. */
static codec_state *take_state(lua_State *L)
{
    codec_state *s = lua_touserdata(L, lua_upvalueindex(CSM_UP_STATE));
    if (s == NULL)
        return new_state(L);
    lua_pushvalue(L, lua_upvalueindex(CSM_UP_STATE));
    lua_pushboolean(L, 0);
    lua_replace(L, lua_upvalueindex(CSM_UP_STATE));
    return s;
}

static void put_state(lua_State *L, int idx, codec_state *s)
{
    if (s->e.cap > CSM_CODEC_KEEP || s->e.scratch_cap > CSM_CODEC_KEEP ||
        s->d.cap * sizeof(csm_token) > CSM_CODEC_KEEP) {
        csm_encoder_free(&s->e);
        csm_decoder_free(&s->d);
    }
    if (lua_isuserdata(L, lua_upvalueindex(CSM_UP_STATE)))
        return;
    lua_pushvalue(L, idx);
    lua_replace(L, lua_upvalueindex(CSM_UP_STATE));
}

/* ---- encoding ---- */

/* A step of the path from the message down to the part being encoded. */
typedef struct step {
    int key;        /* stack index of a map key, or 0 */
    lua_Integer at; /* array index when key is 0; 0: a value's payload */
} step;

typedef struct walk {
    lua_State *L;
    csm_encoder *e;
    int depth;
    int msg;        /* stack slot of the refusal's message */
    const char *code;
    step path[CSM_CODEC_DEPTH + 2];
} walk;

static int is_name(const char *s, size_t n)
{
    if (n == 0 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* Pushes the path to the part at depth: msg.field[2].payload ... */
static void push_path(walk *w, int depth)
{
    lua_State *L = w->L;
    lua_pushliteral(L, "msg");
    for (int i = 0; i < depth; i++) {
        step *s = &w->path[i];
        if (s->key == 0 && s->at == 0) {
            lua_pushliteral(L, ".payload");
        } else if (s->key == 0) {
            lua_pushfstring(L, "[%d]", (int)s->at);
        } else if (lua_type(L, s->key) == LUA_TSTRING) {
            size_t n;
            const char *k = lua_tolstring(L, s->key, &n);
            if (is_name(k, n))
                lua_pushfstring(L, ".%s", k);
            else
                lua_pushfstring(L, "[%s]", k);
        } else {
            lua_pushvalue(L, s->key); /* a copy: tostring must not change a key of lua_next's */
            lua_pushfstring(L, "[%s]", lua_tostring(L, -1));
            lua_remove(L, -2);
        }
        lua_concat(L, 2);
    }
}

/* Records the refusal: "<path at depth> <what>", code; returns 1. */
static int refuse_at(walk *w, int depth, const char *what, const char *code)
{
    lua_State *L = w->L;
    push_path(w, depth);
    lua_pushstring(L, what);
    lua_concat(L, 2);
    lua_replace(L, w->msg);
    w->code = code;
    return 1;
}

/* Records the refusal of the core's failure (e->error) at depth. */
static int refuse_core(walk *w, int depth, int idx)
{
    lua_State *L = w->L;
    switch (w->e->error) {
    case CSM_CODEC_EDEPTH:
        return refuse_at(w, depth, " nests deeper than 8 tables (or is cyclic)", "depth");
    case CSM_CODEC_EOBJECTS:
        return refuse_at(w, 0, " holds more than 65536 objects", "size");
    case CSM_CODEC_ESIZE:
        return refuse_at(w, 0, " encodes to more than 1048576 bytes", "size");
    case CSM_CODEC_ENOMEM:
        lua_pushliteral(L, "out of memory");
        lua_replace(L, w->msg);
        w->code = "nomem";
        return 1;
    case CSM_CODEC_ERANGE:
        if (lua_type(L, idx) == LUA_TNUMBER) {
            lua_Number x = lua_tonumber(L, idx);
            if (x != x)
                return refuse_at(w, depth, " is NaN", "range");
            if (x == HUGE_VAL || x == -HUGE_VAL)
                return refuse_at(w, depth, " is an infinity", "range");
            return refuse_at(w, depth, " is an integer beyond 2^53", "range");
        }
        return refuse_at(w, depth, " has a rank beyond 2^53", "range");
    default:
        return refuse_at(w, depth, " cannot be encoded", csm_codec_errname(w->e->error));
    }
}

static int encode_any(walk *w, int idx);

/* A map key; 0 if it was encoded. */
static int encode_key(walk *w, int k)
{
    lua_State *L = w->L;
    int t = lua_type(L, k);
    if (t == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, k, &n);
        return csm_encode_bin(w->e, s, n) != CSM_CODEC_OK ? refuse_core(w, w->depth - 1, k) : 0;
    }
    if (t == LUA_TNUMBER) {
        lua_Number x = lua_tonumber(L, k);
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, k)) {
            lua_Integer i = lua_tointeger(L, k);
            if (i < -CSM_CODEC_INT_MAX || i > CSM_CODEC_INT_MAX)
                return refuse_at(w, w->depth - 1, " has an integer key beyond 2^53", "key");
            return csm_encode_int(w->e, (int64_t)i) != CSM_CODEC_OK ? refuse_core(w, w->depth - 1, k) : 0;
        }
#endif
        if (floor(x) != x || x == HUGE_VAL || x == -HUGE_VAL) {
            char shown[40];
            lua_pushfstring(L, " has a key %s (a number that is not an integer)",
                            csm_number_text(L, k, shown, sizeof shown));
            int r = refuse_at(w, w->depth - 1, lua_tostring(L, -1), "key");
            lua_pop(L, 1);
            return r;
        }
        if (!(x >= -(lua_Number)CSM_CODEC_INT_MAX && x <= (lua_Number)CSM_CODEC_INT_MAX))
            return refuse_at(w, w->depth - 1, " has an integer key beyond 2^53", "key");
        return csm_encode_int(w->e, (int64_t)x) != CSM_CODEC_OK ? refuse_core(w, w->depth - 1, k) : 0;
    }
    lua_pushfstring(L, " has a key of type %s", lua_typename(L, t));
    int r = refuse_at(w, w->depth - 1, lua_tostring(L, -1), "key");
    lua_pop(L, 1);
    return r;
}

static int encode_table(walk *w, int idx)
{
    lua_State *L = w->L;
    if (lua_getmetatable(L, idx)) {
        lua_pop(L, 1);
        return refuse_at(w, w->depth, " is a table with a metatable", "type");
    }
    /* an array has the keys 1..n exactly: n integer keys, each in [1, n] */
    size_t n = lua_rawlen(L, idx);
    size_t count = 0;
    int array = 1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
        if (array) {
            lua_Number x = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
            array = x >= 1 && x <= (lua_Number)n && floor(x) == x;
        }
    }
    if (count > CSM_CODEC_OBJECTS) {
        w->e->error = CSM_CODEC_EOBJECTS;
        return refuse_core(w, w->depth, idx);
    }
    if (array && count == n) {
        if (csm_encode_array(w->e, (uint32_t)n) != CSM_CODEC_OK)
            return refuse_core(w, w->depth, idx);
        step *s = &w->path[w->depth++];
        s->key = 0;
        for (size_t i = 1; i <= n; i++) {
            s->at = (lua_Integer)i;
            lua_rawgeti(L, idx, (lua_Integer)i);
            if (encode_any(w, lua_gettop(L)))
                return 1;
            lua_pop(L, 1);
        }
        w->depth--;
        return 0;
    }
    if (csm_encode_map(w->e, (uint32_t)count) != CSM_CODEC_OK)
        return refuse_core(w, w->depth, idx);
    step *s = &w->path[w->depth++];
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int v = lua_gettop(L);
        s->key = v - 1;
        if (encode_key(w, v - 1) || encode_any(w, v))
            return 1;
        lua_pop(L, 1);
    }
    w->depth--;
    return 0;
}

/* Encodes the Lua value at idx (an absolute index); 0 if it was encoded,
 * else 1 with the refusal recorded. */
static int encode_any(walk *w, int idx)
{
    lua_State *L = w->L;
    csm_encoder *e = w->e;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return csm_encode_nil(e) != CSM_CODEC_OK ? refuse_core(w, w->depth, idx) : 0;
    case LUA_TBOOLEAN:
        return csm_encode_bool(e, lua_toboolean(L, idx)) != CSM_CODEC_OK ? refuse_core(w, w->depth, idx)
                                                                          : 0;
    case LUA_TNUMBER: {
        int r;
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, idx)) {
            lua_Integer i = lua_tointeger(L, idx);
            r = (i < -CSM_CODEC_INT_MAX || i > CSM_CODEC_INT_MAX) ? (e->error = CSM_CODEC_ERANGE)
                                                                  : csm_encode_int(e, (int64_t)i);
        } else
#endif
            r = csm_encode_number(e, (double)lua_tonumber(L, idx));
        return r != CSM_CODEC_OK ? refuse_core(w, w->depth, idx) : 0;
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return csm_encode_bin(e, s, n) != CSM_CODEC_OK ? refuse_core(w, w->depth, idx) : 0;
    }
    case LUA_TTABLE:
        return encode_table(w, idx);
    case LUA_TUSERDATA: {
        csm_value *v = csm_test_value(L, idx);
        if (v == NULL)
            break;
        if (csm_encode_value(e, v->identity, v->len, v->rank, v->has_payload) != CSM_CODEC_OK)
            return refuse_core(w, w->depth, idx);
        if (!v->has_payload)
            return 0;
        csm_getuservalue(L, idx);
        step *s = &w->path[w->depth++];
        s->key = 0;
        s->at = 0;
        if (encode_any(w, lua_gettop(L)))
            return 1;
        w->depth--;
        lua_pop(L, 1);
        return 0;
    }
    default:
        break;
    }
    lua_pushfstring(L, " is a %s", luaL_typename(L, idx));
    refuse_at(w, w->depth, lua_tostring(L, -1), "type");
    return 1;
}

/* core.encode(x) -> bytes, or nil, message, code */
static int codec_encode(lua_State *L)
{
    if (lua_gettop(L) < 1)
        return csm_argerror(L, 1, "codec.encode", 1, "x", "value expected");
    lua_settop(L, 1);
    lua_checkstack(L, 4 * CSM_CODEC_DEPTH + 24);
    codec_state *s = take_state(L); /* at 2 */
    lua_pushnil(L);                 /* 3: the refusal's message */
    csm_encoder_reset(&s->e);
    walk w;
    w.L = L;
    w.e = &s->e;
    w.depth = 0;
    w.msg = 3;
    w.code = NULL;
    size_t n = 0;
    const uint8_t *bytes = NULL;
    if (!encode_any(&w, 1)) {
        bytes = csm_encoder_finish(&s->e, &n);
        if (bytes == NULL)
            refuse_core(&w, 0, 1);
    }
    if (bytes == NULL) {
        lua_settop(L, 3);
        put_state(L, 2, s);
        lua_pushnil(L);
        lua_pushvalue(L, 3);
        lua_pushstring(L, w.code);
        return 3;
    }
    lua_settop(L, 2);
    lua_pushlstring(L, (const char *)bytes, n);
    put_state(L, 2, s);
    return 1;
}

/* ---- decoding ---- */

static void push_integer(lua_State *L, int64_t i)
{
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(L, (lua_Integer)i);
#else
    lua_pushnumber(L, (lua_Number)i);
#endif
}

/* Pushes the object of tokens[*i] (and what it holds); *i moves past them. */
static void push_tokens(lua_State *L, const csm_token *tokens, size_t *i, const char *bytes)
{
    const csm_token *t = &tokens[(*i)++];
    switch (t->kind) {
    case CSM_TOKEN_NIL: lua_pushnil(L); break;
    case CSM_TOKEN_FALSE: lua_pushboolean(L, 0); break;
    case CSM_TOKEN_TRUE: lua_pushboolean(L, 1); break;
    case CSM_TOKEN_INT: push_integer(L, t->u.i); break;
    case CSM_TOKEN_FLOAT: lua_pushnumber(L, (lua_Number)t->u.f); break;
    case CSM_TOKEN_BIN: lua_pushlstring(L, bytes + t->u.span.pos, t->u.span.len); break;
    case CSM_TOKEN_ARRAY: {
        uint32_t n = t->u.span.len;
        lua_createtable(L, (int)n, 0);
        for (uint32_t k = 1; k <= n; k++) {
            push_tokens(L, tokens, i, bytes);
            lua_rawseti(L, -2, (lua_Integer)k);
        }
        break;
    }
    case CSM_TOKEN_MAP: {
        uint32_t n = t->u.span.len;
        /* built in key order, so that pairs walks it alike run after run */
        lua_createtable(L, 0, (int)n);
        for (uint32_t k = 0; k < n; k++) {
            push_tokens(L, tokens, i, bytes);
            push_tokens(L, tokens, i, bytes);
            lua_rawset(L, -3);
        }
        break;
    }
    case CSM_TOKEN_VALUE: {
        const csm_token *id = &tokens[*i], *rank = &tokens[*i + 1];
        *i += 2;
        int has_payload = t->u.span.len == 3;
        if (has_payload)
            push_tokens(L, tokens, i, bytes);
        csm_push_value(L, bytes + id->u.span.pos, id->u.span.len, (uint64_t)rank->u.i,
                       has_payload ? -1 : 0);
        if (has_payload)
            lua_remove(L, -2);
        break;
    }
    default: lua_pushnil(L); break;
    }
}

/* core.decode(bytes) -> x, or nil, "reason at byte N", code */
static int codec_decode(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return csm_argerror(L, 1, "codec.decode", 1, "bytes", "string expected");
    lua_settop(L, 1);
    size_t n;
    const char *bytes = lua_tolstring(L, 1, &n);
    lua_checkstack(L, 3 * CSM_CODEC_DEPTH + 24);
    codec_state *s = take_state(L); /* at 2 */
    int code = csm_decode(&s->d, (const uint8_t *)bytes, n);
    if (code != CSM_CODEC_OK) {
        lua_pushnil(L);
        lua_pushstring(L, s->d.message);
        lua_pushstring(L, csm_codec_errname(code));
        put_state(L, 2, s);
        return 3;
    }
    size_t i = 0;
    push_tokens(L, s->d.tokens, &i, bytes);
    put_state(L, 2, s);
    return 1;
}

static const luaL_Reg functions[] = {
    {"encode", codec_encode},
    {"decode", codec_decode},
    {NULL, NULL},
};

void csm_open_codec(lua_State *L)
{
    for (const luaL_Reg *f = functions; f->name != NULL; f++) {
        csm_push_upvalues(L);
        new_state(L);
        lua_pushcclosure(L, f->func, CSM_NUPVALUES + 1);
        lua_setfield(L, -2, f->name);
    }
    lua_createtable(L, 0, 3);
    push_integer(L, CSM_CODEC_FRAME);
    lua_setfield(L, -2, "frame");
    push_integer(L, CSM_CODEC_DEPTH);
    lua_setfield(L, -2, "depth");
    push_integer(L, CSM_CODEC_OBJECTS);
    lua_setfield(L, -2, "objects");
    lua_setfield(L, -2, "codec_limits");
}
