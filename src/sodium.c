/* csm.core.sodium: the few libsodium primitives a real node needs, over Lua
 * strings: Ed25519 signatures, X25519 key exchange (crypto_kx), the
 * XChaCha20-Poly1305 AEAD, BLAKE2b (generichash), random bytes and the
 * secretstream that encrypts a connection's frames. Each function checks
 * its arguments' types and sizes and makes one libsodium call; bytes that
 * come from peers (signatures, ciphertexts) are refused, never raised on. */
#include <string.h>

#include <sodium.h>

#include "private.h"

#define CSM_STREAM_MT "csm.sodium.stream"

/* The largest buffer one call allocates (random, hash input aside): the
 * plaintext of the largest frame plus room; keeps a bad length from asking
 * for gigabytes. */
#define CSM_SODIUM_MAX (16u * 1024u * 1024u)

/* A secretstream state, one direction of a connection. */
typedef struct csm_stream {
    crypto_secretstream_xchacha20poly1305_state state;
    int push;   /* 1: encrypts (push_init), 0: decrypts (pull_init) */
    int closed; /* zeroed by close, __gc or __close */
} csm_stream;

/* The string argument n at idx; raises naming it unless it is a string. */
static const unsigned char *check_bytes(lua_State *L, int idx, const char *fname, int n,
                                        const char *name, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        csm_argerror(L, idx, fname, n, name, "string expected");
    return (const unsigned char *)lua_tolstring(L, idx, len);
}

/* The string argument n at idx, of exactly size bytes; raises otherwise. */
static const unsigned char *check_sized(lua_State *L, int idx, const char *fname, int n,
                                        const char *name, size_t size)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        csm_error(L, "%s: bad argument #%d '%s' (%d-byte string expected, got %s)", fname, n, name,
                  (int)size, luaL_typename(L, idx));
    size_t len;
    const unsigned char *s = (const unsigned char *)lua_tolstring(L, idx, &len);
    if (len != size)
        csm_error(L, "%s: bad argument #%d '%s' (%d-byte string expected, got %d bytes)", fname, n,
                  name, (int)size, (int)(len > 0x7fffffff ? 0x7fffffff : len));
    return s;
}

/* An optional string argument (nil: empty). */
static const unsigned char *opt_bytes(lua_State *L, int idx, const char *fname, int n,
                                      const char *name, size_t *len)
{
    if (lua_isnoneornil(L, idx)) {
        *len = 0;
        return (const unsigned char *)"";
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        csm_argerror(L, idx, fname, n, name, "string or nil expected");
    return (const unsigned char *)lua_tolstring(L, idx, len);
}

/* Raises unless len is at most CSM_SODIUM_MAX. */
static void check_max(lua_State *L, size_t len, const char *fname, int n, const char *name)
{
    if (len > CSM_SODIUM_MAX)
        csm_error(L, "%s: bad argument #%d '%s' (string of at most %d bytes expected)", fname, n,
                  name, (int)CSM_SODIUM_MAX);
}

/* Returns nil, message, code (a refusal of bytes from a peer or a file). */
static int refuse(lua_State *L, const char *message, const char *code)
{
    lua_pushnil(L);
    lua_pushstring(L, message);
    lua_pushstring(L, code);
    return 3;
}

/* Pushes the len bytes of buf as a string and zeroes buf. */
static void push_wiped(lua_State *L, unsigned char *buf, size_t len)
{
    lua_pushlstring(L, (const char *)buf, len);
    sodium_memzero(buf, len);
}

/* ---- Ed25519 ---- */

/* sodium.sign_keypair([seed32]) -> public32, secret64: a new key pair, or
 * the one the seed determines. */
static int sign_keypair(lua_State *L)
{
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    if (lua_isnoneornil(L, 1)) {
        crypto_sign_keypair(pk, sk);
    } else {
        const unsigned char *seed = check_sized(L, 1, "sodium.sign_keypair", 1, "seed",
                                                crypto_sign_SEEDBYTES);
        crypto_sign_seed_keypair(pk, sk, seed);
    }
    lua_pushlstring(L, (const char *)pk, sizeof pk);
    push_wiped(L, sk, sizeof sk);
    return 2;
}

/* sodium.sign_seed(secret64) -> seed32: what the secret key was made from. */
static int sign_seed(lua_State *L)
{
    const unsigned char *sk = check_sized(L, 1, "sodium.sign_seed", 1, "secret",
                                          crypto_sign_SECRETKEYBYTES);
    unsigned char seed[crypto_sign_SEEDBYTES];
    crypto_sign_ed25519_sk_to_seed(seed, sk);
    push_wiped(L, seed, sizeof seed);
    return 1;
}

/* sodium.sign_public(secret64) -> public32: the secret key's public key. */
static int sign_public(lua_State *L)
{
    const unsigned char *sk = check_sized(L, 1, "sodium.sign_public", 1, "secret",
                                          crypto_sign_SECRETKEYBYTES);
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    crypto_sign_ed25519_sk_to_pk(pk, sk);
    lua_pushlstring(L, (const char *)pk, sizeof pk);
    return 1;
}

/* sodium.sign(message, secret64) -> sig64 (detached). */
static int sign(lua_State *L)
{
    size_t len;
    const unsigned char *m = check_bytes(L, 1, "sodium.sign", 1, "message", &len);
    const unsigned char *sk = check_sized(L, 2, "sodium.sign", 2, "secret",
                                          crypto_sign_SECRETKEYBYTES);
    unsigned char sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, m, len, sk);
    lua_pushlstring(L, (const char *)sig, sizeof sig);
    return 1;
}

/* sodium.verify(sig, message, public32) -> boolean; a signature of the
 * wrong size is false (it comes from a peer). */
static int verify(lua_State *L)
{
    size_t siglen, len;
    const unsigned char *sig = check_bytes(L, 1, "sodium.verify", 1, "sig", &siglen);
    const unsigned char *m = check_bytes(L, 2, "sodium.verify", 2, "message", &len);
    const unsigned char *pk = check_sized(L, 3, "sodium.verify", 3, "public",
                                          crypto_sign_PUBLICKEYBYTES);
    lua_pushboolean(L, siglen == crypto_sign_BYTES &&
                           crypto_sign_verify_detached(sig, m, len, pk) == 0);
    return 1;
}

/* ---- X25519 key exchange ---- */

/* sodium.kx_keypair() -> public32, secret32: a fresh ephemeral pair. */
static int kx_keypair(lua_State *L)
{
    unsigned char pk[crypto_kx_PUBLICKEYBYTES], sk[crypto_kx_SECRETKEYBYTES];
    crypto_kx_keypair(pk, sk);
    lua_pushlstring(L, (const char *)pk, sizeof pk);
    push_wiped(L, sk, sizeof sk);
    return 2;
}

/* The session keys of either side: server 0 is crypto_kx's client. */
static int kx_session(lua_State *L, const char *fname, int server)
{
    const unsigned char *pk = check_sized(L, 1, fname, 1, "public", crypto_kx_PUBLICKEYBYTES);
    const unsigned char *sk = check_sized(L, 2, fname, 2, "secret", crypto_kx_SECRETKEYBYTES);
    const unsigned char *peer = check_sized(L, 3, fname, 3, "peer", crypto_kx_PUBLICKEYBYTES);
    unsigned char rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
    int r = server ? crypto_kx_server_session_keys(rx, tx, pk, sk, peer)
                   : crypto_kx_client_session_keys(rx, tx, pk, sk, peer);
    if (r != 0)
        return refuse(L, "the peer's key exchange key is not a usable point", "weak");
    push_wiped(L, rx, sizeof rx);
    push_wiped(L, tx, sizeof tx);
    return 2;
}

/* sodium.kx_client(public, secret, peer) -> rx, tx | nil, message, "weak". */
static int kx_client(lua_State *L)
{
    return kx_session(L, "sodium.kx_client", 0);
}

/* sodium.kx_server(public, secret, peer) -> rx, tx | nil, message, "weak". */
static int kx_server(lua_State *L)
{
    return kx_session(L, "sodium.kx_server", 1);
}

/* ---- XChaCha20-Poly1305-IETF ---- */

#define AEAD_KEYBYTES crypto_aead_xchacha20poly1305_ietf_KEYBYTES
#define AEAD_NPUBBYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define AEAD_ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES

/* sodium.aead_encrypt(plain, ad, nonce24, key32) -> cipher (ad may be nil). */
static int aead_encrypt(lua_State *L)
{
    const char *fname = "sodium.aead_encrypt";
    size_t len, adlen;
    const unsigned char *m = check_bytes(L, 1, fname, 1, "plain", &len);
    check_max(L, len, fname, 1, "plain");
    const unsigned char *ad = opt_bytes(L, 2, fname, 2, "ad", &adlen);
    const unsigned char *nonce = check_sized(L, 3, fname, 3, "nonce", AEAD_NPUBBYTES);
    const unsigned char *key = check_sized(L, 4, fname, 4, "key", AEAD_KEYBYTES);
    unsigned long long clen;
    unsigned char *c = lua_newuserdata(L, len + AEAD_ABYTES);
    crypto_aead_xchacha20poly1305_ietf_encrypt(c, &clen, m, len, ad, adlen, NULL, nonce, key);
    lua_pushlstring(L, (const char *)c, (size_t)clen);
    return 1;
}

/* sodium.aead_decrypt(cipher, ad, nonce24, key32) -> plain | nil, message,
 * "tampered". */
static int aead_decrypt(lua_State *L)
{
    const char *fname = "sodium.aead_decrypt";
    size_t len, adlen;
    const unsigned char *c = check_bytes(L, 1, fname, 1, "cipher", &len);
    const unsigned char *ad = opt_bytes(L, 2, fname, 2, "ad", &adlen);
    const unsigned char *nonce = check_sized(L, 3, fname, 3, "nonce", AEAD_NPUBBYTES);
    const unsigned char *key = check_sized(L, 4, fname, 4, "key", AEAD_KEYBYTES);
    if (len < AEAD_ABYTES || len > CSM_SODIUM_MAX + AEAD_ABYTES)
        return refuse(L, "the ciphertext has the wrong length", "tampered");
    unsigned long long mlen;
    unsigned char *m = lua_newuserdata(L, len - AEAD_ABYTES + 1);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(m, &mlen, NULL, c, len, ad, adlen, nonce,
                                                   key) != 0)
        return refuse(L, "the ciphertext does not authenticate", "tampered");
    push_wiped(L, m, (size_t)mlen);
    return 1;
}

/* ---- BLAKE2b ---- */

/* sodium.hash(message [, key] [, length]) -> bytes: BLAKE2b of length bytes
 * (16 to 64, default 32), keyed when key (16 to 64 bytes) is given. */
static int hash(lua_State *L)
{
    const char *fname = "sodium.hash";
    size_t len, keylen = 0;
    const unsigned char *m = check_bytes(L, 1, fname, 1, "message", &len);
    const unsigned char *key = NULL;
    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TSTRING)
            return csm_argerror(L, 2, fname, 2, "key", "string of 16 to 64 bytes or nil expected");
        key = (const unsigned char *)lua_tolstring(L, 2, &keylen);
        if (keylen < crypto_generichash_KEYBYTES_MIN || keylen > crypto_generichash_KEYBYTES_MAX)
            return csm_error(L, "%s: bad argument #2 'key' (string of 16 to 64 bytes or nil "
                                "expected, got %d bytes)", fname, (int)(keylen > 999 ? 999 : keylen));
    }
    double n = crypto_generichash_BYTES;
    if (!lua_isnoneornil(L, 3) &&
        !csm_is_integer_in(L, 3, crypto_generichash_BYTES_MIN, crypto_generichash_BYTES_MAX, &n))
        return csm_argerror(L, 3, fname, 3, "length", "integer in [16, 64] or nil expected");
    unsigned char out[crypto_generichash_BYTES_MAX];
    crypto_generichash(out, (size_t)n, m, len, key, keylen);
    push_wiped(L, out, (size_t)n);
    return 1;
}

/* sodium.random(n) -> n random bytes (n in [0, 2^24]). */
static int random_bytes(lua_State *L)
{
    double n;
    if (!csm_is_integer_in(L, 1, 0, CSM_SODIUM_MAX, &n))
        return csm_argerror(L, 1, "sodium.random", 1, "n", "integer in [0, 2^24] expected");
    unsigned char *buf = lua_newuserdata(L, (size_t)n + 1);
    randombytes_buf(buf, (size_t)n);
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    return 1;
}

/* ---- secretstream XChaCha20-Poly1305 ---- */

#define STREAM_KEYBYTES crypto_secretstream_xchacha20poly1305_KEYBYTES
#define STREAM_HEADERBYTES crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define STREAM_ABYTES crypto_secretstream_xchacha20poly1305_ABYTES

/* The one close every path reaches: the state is zeroed. */
static void stream_close(csm_stream *st)
{
    if (!st->closed) {
        sodium_memzero(&st->state, sizeof st->state);
        st->closed = 1;
    }
}

/* The open stream at self of the direction push; raises otherwise. */
static csm_stream *check_stream(lua_State *L, const char *fname, int push)
{
    csm_stream *st = luaL_testudata(L, 1, CSM_STREAM_MT);
    if (st == NULL)
        csm_selferror(L, 1, fname, "csm secretstream expected");
    if (push >= 0 && st->push != push)
        csm_error(L, "%s: bad self (a %s stream expected, got a %s stream)", fname,
                  push ? "push" : "pull", st->push ? "push" : "pull");
    if (push >= 0 && st->closed)
        csm_error(L, "%s: the stream is closed", fname);
    return st;
}

static csm_stream *new_stream(lua_State *L, int push)
{
    csm_stream *st = lua_newuserdata(L, sizeof *st);
    memset(st, 0, sizeof *st);
    st->push = push;
    st->closed = 1; /* until initialized */
    luaL_getmetatable(L, CSM_STREAM_MT);
    lua_setmetatable(L, -2);
    return st;
}

/* sodium.push_init(key32) -> stream, header24: a new encrypting stream. */
static int push_init(lua_State *L)
{
    const unsigned char *key = check_sized(L, 1, "sodium.push_init", 1, "key", STREAM_KEYBYTES);
    csm_stream *st = new_stream(L, 1);
    unsigned char header[STREAM_HEADERBYTES];
    crypto_secretstream_xchacha20poly1305_init_push(&st->state, header, key);
    st->closed = 0;
    lua_pushlstring(L, (const char *)header, sizeof header);
    return 2;
}

/* sodium.pull_init(header24, key32) -> stream | nil, message, "tampered":
 * the decrypting stream of a push stream's header. */
static int pull_init(lua_State *L)
{
    const unsigned char *header = check_sized(L, 1, "sodium.pull_init", 1, "header",
                                              STREAM_HEADERBYTES);
    const unsigned char *key = check_sized(L, 2, "sodium.pull_init", 2, "key", STREAM_KEYBYTES);
    csm_stream *st = new_stream(L, 0);
    if (crypto_secretstream_xchacha20poly1305_init_pull(&st->state, header, key) != 0)
        return refuse(L, "the stream header is invalid", "tampered");
    st->closed = 0;
    return 1;
}

/* stream:push(plain [, tag [, ad]]) -> cipher (#plain + 17 bytes); tag is
 * one of sodium.TAG_* (default TAG_MESSAGE). */
static int stream_push(lua_State *L)
{
    const char *fname = "stream:push";
    csm_stream *st = check_stream(L, fname, 1);
    size_t len, adlen;
    const unsigned char *m = check_bytes(L, 2, fname, 1, "plain", &len);
    check_max(L, len, fname, 1, "plain");
    double tag = crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    if (!lua_isnoneornil(L, 3) && !csm_is_integer_in(L, 3, 0, 3, &tag))
        return csm_argerror(L, 3, fname, 2, "tag", "integer in [0, 3] or nil expected");
    const unsigned char *ad = opt_bytes(L, 4, fname, 3, "ad", &adlen);
    unsigned char *c = lua_newuserdata(L, len + STREAM_ABYTES);
    unsigned long long clen;
    crypto_secretstream_xchacha20poly1305_push(&st->state, c, &clen, m, len, adlen ? ad : NULL,
                                               adlen, (unsigned char)tag);
    lua_pushlstring(L, (const char *)c, (size_t)clen);
    return 1;
}

/* stream:pull(cipher [, ad]) -> plain, tag | nil, message, "tampered". */
static int stream_pull(lua_State *L)
{
    const char *fname = "stream:pull";
    csm_stream *st = check_stream(L, fname, 0);
    size_t len, adlen;
    const unsigned char *c = check_bytes(L, 2, fname, 1, "cipher", &len);
    const unsigned char *ad = opt_bytes(L, 3, fname, 2, "ad", &adlen);
    if (len < STREAM_ABYTES || len > CSM_SODIUM_MAX + STREAM_ABYTES)
        return refuse(L, "the frame has the wrong length", "tampered");
    unsigned char *m = lua_newuserdata(L, len - STREAM_ABYTES + 1);
    unsigned long long mlen;
    unsigned char tag;
    if (crypto_secretstream_xchacha20poly1305_pull(&st->state, m, &mlen, &tag, c, len,
                                                   adlen ? ad : NULL, adlen) != 0)
        return refuse(L, "the frame does not authenticate (tampered, replayed or reordered)",
                      "tampered");
    push_wiped(L, m, (size_t)mlen);
    lua_pushinteger(L, tag);
    return 2;
}

/* stream:close() -> true: zeroes the state (idempotent). */
static int stream_close_method(lua_State *L)
{
    stream_close(check_stream(L, "stream:close", -1));
    lua_pushboolean(L, 1);
    return 1;
}

/* stream:closed() -> boolean. */
static int stream_closed(lua_State *L)
{
    lua_pushboolean(L, check_stream(L, "stream:closed", -1)->closed);
    return 1;
}

static int stream_gc(lua_State *L)
{
    csm_stream *st = luaL_testudata(L, 1, CSM_STREAM_MT);
    if (st != NULL)
        stream_close(st);
    return 0;
}

static int stream_tostring(lua_State *L)
{
    csm_stream *st = check_stream(L, "stream:__tostring", -1);
    lua_pushfstring(L, "csm.sodium.stream (%s%s)", st->push ? "push" : "pull",
                    st->closed ? ", closed" : "");
    return 1;
}

static const luaL_Reg stream_methods[] = {
    {"push", stream_push},
    {"pull", stream_pull},
    {"close", stream_close_method},
    {"closed", stream_closed},
    {NULL, NULL},
};

static const luaL_Reg stream_metamethods[] = {
    {"__gc", stream_gc},
    {"__close", stream_gc},
    {"__tostring", stream_tostring},
    {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"sign_keypair", sign_keypair},
    {"sign_seed", sign_seed},
    {"sign_public", sign_public},
    {"sign", sign},
    {"verify", verify},
    {"kx_keypair", kx_keypair},
    {"kx_client", kx_client},
    {"kx_server", kx_server},
    {"aead_encrypt", aead_encrypt},
    {"aead_decrypt", aead_decrypt},
    {"hash", hash},
    {"random", random_bytes},
    {"push_init", push_init},
    {"pull_init", pull_init},
    {NULL, NULL},
};

void csm_open_sodium(lua_State *L)
{
    if (sodium_init() < 0)
        csm_error(L, "csm.core: libsodium cannot be initialized");
    if (luaL_newmetatable(L, CSM_STREAM_MT)) {
        luaL_setfuncs(L, stream_metamethods, 0);
        lua_newtable(L);
        luaL_setfuncs(L, stream_methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_setfuncs(L, functions, 0);
    lua_pushinteger(L, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    lua_setfield(L, -2, "TAG_MESSAGE");
    lua_pushinteger(L, crypto_secretstream_xchacha20poly1305_TAG_PUSH);
    lua_setfield(L, -2, "TAG_PUSH");
    lua_pushinteger(L, crypto_secretstream_xchacha20poly1305_TAG_REKEY);
    lua_setfield(L, -2, "TAG_REKEY");
    lua_pushinteger(L, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    lua_setfield(L, -2, "TAG_FINAL");
    lua_pushinteger(L, STREAM_ABYTES);
    lua_setfield(L, -2, "STREAM_ABYTES");
    lua_pushinteger(L, STREAM_HEADERBYTES);
    lua_setfield(L, -2, "STREAM_HEADERBYTES");
    lua_pushinteger(L, AEAD_ABYTES);
    lua_setfield(L, -2, "AEAD_ABYTES");
    lua_setfield(L, -2, "sodium");
}
