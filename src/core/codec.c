/* The wire codec (see codec.h): a validating decoder that turns a frame
 * into tokens, and an encoder that sorts each map's pairs by their keys'
 * bytes as the map closes. */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *csm_codec_errname(int code)
{
    static const char *const names[] = {
#define CSM_CODEC_NAME(code, name, text) name,
        CSM_CODEC_ERRORS(CSM_CODEC_NAME)
#undef CSM_CODEC_NAME
    };
    if (code < 0 || code >= CSM_CODEC_NCODES)
        return "unknown";
    return names[code];
}

/* ---- bytes ---- */

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* Bytes of a map key (a bin or an integer, as the encoder checked) at p. */
static uint32_t key_len(const uint8_t *p)
{
    uint8_t b = p[0];
    switch (b) {
    case 0xcc: case 0xd0: return 2;
    case 0xcd: case 0xd1: return 3;
    case 0xce: case 0xd2: return 5;
    case 0xcf: case 0xd3: return 9;
    case 0xc4: return 2 + (uint32_t)p[1];
    case 0xc5: return 3 + (uint32_t)be(p + 1, 2);
    case 0xc6: return 5 + (uint32_t)be(p + 1, 4);
    default: return 1; /* fixints */
    }
}

/* Whether the key bytes at p (klen of them) encode the integer want. */
static int key_is(const uint8_t *p, uint32_t klen, uint64_t want)
{
    uint8_t b = p[0];
    if (b <= 0x7f)
        return b == want;
    if (b >= 0xcc && b <= 0xcf)
        return be(p + 1, (int)klen - 1) == want;
    return 0;
}

/* Whether x (finite) has no fraction: every double beyond 2^53 is an integer. */
static int is_integral(double x)
{
    if (x >= 9007199254740992.0 || x <= -9007199254740992.0)
        return 1;
    return x == (double)(int64_t)x;
}

/* Whether x is neither NaN nor an infinity (x - x is NaN for both). */
static int is_finite(double x)
{
    return x - x == 0;
}

/* ---- decoding ---- */

void csm_decoder_init(csm_decoder *d, csm_codec_alloc alloc, void *ud)
{
    memset(d, 0, sizeof *d);
    d->alloc = alloc;
    d->ud = ud;
}

void csm_decoder_free(csm_decoder *d)
{
    if (d->tokens != NULL)
        d->alloc(d->ud, d->tokens, d->cap * sizeof *d->tokens, 0);
    d->tokens = NULL;
    d->cap = d->ntokens = 0;
}

static int refuse(csm_decoder *d, int code, size_t at, const char *reason)
{
    d->offset = at;
    snprintf(d->message, sizeof d->message, "%s at byte %zu", reason, at);
    return code;
}

/* An open container while decoding. */
typedef struct dframe {
    uint8_t kind;        /* CSM_TOKEN_ARRAY, _MAP or _VALUE */
    uint32_t left;       /* items still to come (a map counts keys and values) */
    uint32_t count;      /* items in all */
    uint32_t start;      /* its first byte */
    uint32_t end;        /* value: where its content ends */
    uint32_t outer;      /* value: the limit outside it */
    uint32_t key, klen;  /* map: the last key's bytes */
    int seq;             /* map: every key so far is its index (from 1) */
} dframe;

int csm_decode(csm_decoder *d, const uint8_t *p, size_t n)
{
    d->ntokens = 0;
    if (n > CSM_CODEC_FRAME)
        return refuse(d, CSM_CODEC_ESIZE, CSM_CODEC_FRAME, "frame larger than 1048576 bytes");
    if (n == 0)
        return refuse(d, CSM_CODEC_ETRUNCATED, 0, "truncated");
    size_t need = n < CSM_CODEC_OBJECTS ? n : CSM_CODEC_OBJECTS;
    if (d->cap < need) {
        csm_token *t = d->alloc(d->ud, d->tokens, d->cap * sizeof *t, need * sizeof *t);
        if (t == NULL) {
            d->offset = 0;
            snprintf(d->message, sizeof d->message, "out of memory");
            return CSM_CODEC_ENOMEM;
        }
        d->tokens = t;
        d->cap = need;
    }
    dframe fr[CSM_CODEC_DEPTH + 1];
    int depth = 0;
    uint32_t pos = 0, limit = (uint32_t)n, objects = 0;
    csm_token *tok = d->tokens;
    size_t nt = 0;

    for (;;) {
        dframe *top = depth > 0 ? &fr[depth - 1] : NULL;
        int is_key = top != NULL && top->kind == CSM_TOKEN_MAP && top->left % 2 == 0;
        uint32_t item = top != NULL && top->kind == CSM_TOKEN_VALUE ? top->count - top->left : 0;
        uint32_t start = pos;
        if (pos >= limit)
            return refuse(d, CSM_CODEC_ETRUNCATED, pos, "truncated");
        if (++objects > CSM_CODEC_OBJECTS)
            return refuse(d, CSM_CODEC_EOBJECTS, pos, "more than 65536 objects");
        uint32_t left = limit - pos - 1; /* bytes after the type byte */
        uint8_t b = p[pos];
        csm_token *t = &tok[nt];
        uint32_t open = 0; /* items of a container opened here */
        int width = 0;     /* bytes of a length or number field */

        if (b <= 0x7f) {
            t->kind = CSM_TOKEN_INT;
            t->u.i = b;
            pos += 1;
        } else if (b >= 0xe0) {
            t->kind = CSM_TOKEN_INT;
            t->u.i = (int64_t)b - 256;
            pos += 1;
        } else if (b == 0xc0 || b == 0xc2 || b == 0xc3) {
            t->kind = b == 0xc0 ? CSM_TOKEN_NIL : b == 0xc2 ? CSM_TOKEN_FALSE : CSM_TOKEN_TRUE;
            pos += 1;
        } else if (b >= 0xcc && b <= 0xcf) {
            width = 1 << (b - 0xcc);
            if (left < (uint32_t)width)
                return refuse(d, CSM_CODEC_ETRUNCATED, start, "truncated");
            uint64_t v = be(p + pos + 1, width);
            static const uint64_t least[] = {128, 256, 65536, 4294967296u};
            if (v < least[b - 0xcc])
                return refuse(d, CSM_CODEC_ECANONICAL, start, "integer not in its shortest form");
            if (v > (uint64_t)CSM_CODEC_INT_MAX)
                return refuse(d, CSM_CODEC_ERANGE, start, "integer beyond 2^53");
            t->kind = CSM_TOKEN_INT;
            t->u.i = (int64_t)v;
            pos += 1 + width;
        } else if (b >= 0xd0 && b <= 0xd3) {
            width = 1 << (b - 0xd0);
            if (left < (uint32_t)width)
                return refuse(d, CSM_CODEC_ETRUNCATED, start, "truncated");
            uint64_t u = be(p + pos + 1, width);
            /* sign-extend the width's two's complement */
            int64_t v = width == 8 ? (int64_t)u
                                   : (int64_t)u - ((u >> (8 * width - 1)) ? ((int64_t)1 << (8 * width)) : 0);
            static const int64_t most[] = {-33, -129, -32769, -2147483649LL};
            if (v > most[b - 0xd0])
                return refuse(d, CSM_CODEC_ECANONICAL, start, "integer not in its shortest form");
            if (v < -CSM_CODEC_INT_MAX)
                return refuse(d, CSM_CODEC_ERANGE, start, "integer beyond -2^53");
            t->kind = CSM_TOKEN_INT;
            t->u.i = v;
            pos += 1 + width;
        } else if (b == 0xcb) {
            if (left < 8)
                return refuse(d, CSM_CODEC_ETRUNCATED, start, "truncated");
            uint64_t u = be(p + pos + 1, 8);
            double x;
            memcpy(&x, &u, sizeof x);
            if (!is_finite(x))
                return refuse(d, CSM_CODEC_ERANGE, start, "float not finite");
            if (is_integral(x))
                return refuse(d, CSM_CODEC_ECANONICAL, start, "float holding an integer");
            t->kind = CSM_TOKEN_FLOAT;
            t->u.f = x;
            pos += 9;
        } else if (b >= 0xc4 && b <= 0xc6) {
            width = 1 << (b - 0xc4);
            if (left < (uint32_t)width)
                return refuse(d, CSM_CODEC_ETRUNCATED, start, "truncated");
            uint64_t len = be(p + pos + 1, width);
            if ((b == 0xc5 && len < 256) || (b == 0xc6 && len < 65536))
                return refuse(d, CSM_CODEC_ECANONICAL, start, "length not in its shortest form");
            if (len > left - (uint32_t)width)
                return refuse(d, CSM_CODEC_ELENGTH, start, "length beyond the bytes left");
            t->kind = CSM_TOKEN_BIN;
            t->u.span.pos = pos + 1 + (uint32_t)width;
            t->u.span.len = (uint32_t)len;
            pos += 1 + (uint32_t)width + (uint32_t)len;
        } else if ((b >= 0x80 && b <= 0x9f) || (b >= 0xdc && b <= 0xdf)) {
            int is_map = (b >= 0x80 && b <= 0x8f) || b >= 0xde;
            uint64_t count;
            if (b <= 0x9f) {
                count = b & 0x0f;
            } else {
                width = (b == 0xdc || b == 0xde) ? 2 : 4;
                if (left < (uint32_t)width)
                    return refuse(d, CSM_CODEC_ETRUNCATED, start, "truncated");
                count = be(p + pos + 1, width);
                if (count < (width == 2 ? 16u : 65536u))
                    return refuse(d, CSM_CODEC_ECANONICAL, start, "length not in its shortest form");
            }
            if ((is_map ? 2 * count : count) > left - (uint32_t)width)
                return refuse(d, CSM_CODEC_ELENGTH, start, "length beyond the bytes left");
            if (is_map && count == 0)
                return refuse(d, CSM_CODEC_ECANONICAL, start, "empty map (the empty array is its form)");
            if (depth >= CSM_CODEC_DEPTH)
                return refuse(d, CSM_CODEC_EDEPTH, start, "nesting deeper than 8");
            t->kind = is_map ? CSM_TOKEN_MAP : CSM_TOKEN_ARRAY;
            t->u.span.pos = start;
            t->u.span.len = (uint32_t)count;
            open = (uint32_t)(is_map ? 2 * count : count);
            pos += 1 + (uint32_t)width;
        } else if ((b >= 0xd4 && b <= 0xd8) || (b >= 0xc7 && b <= 0xc9)) {
            uint64_t len;
            if (b >= 0xd4) {
                len = (uint64_t)1 << (b - 0xd4);
            } else {
                width = 1 << (b - 0xc7);
                if (left < (uint32_t)width)
                    return refuse(d, CSM_CODEC_ETRUNCATED, start, "truncated");
                len = be(p + pos + 1, width);
                int fixed = len == 1 || len == 2 || len == 4 || len == 8 || len == 16;
                if ((b == 0xc7 && fixed) || (b == 0xc8 && len < 256) || (b == 0xc9 && len < 65536))
                    return refuse(d, CSM_CODEC_ECANONICAL, start, "length not in its shortest form");
            }
            if (left < (uint32_t)width + 1)
                return refuse(d, CSM_CODEC_ETRUNCATED, start, "truncated");
            if (p[pos + 1 + width] != CSM_CODEC_EXT_VALUE)
                return refuse(d, CSM_CODEC_ETYPE, start, "extension type not in the format");
            if (len > left - (uint32_t)width - 1)
                return refuse(d, CSM_CODEC_ELENGTH, start, "length beyond the bytes left");
            if (depth >= CSM_CODEC_DEPTH)
                return refuse(d, CSM_CODEC_EDEPTH, start, "nesting deeper than 8");
            uint32_t content = pos + 2 + (uint32_t)width;
            uint32_t end = content + (uint32_t)len;
            if (len == 0 || (p[content] != 0x92 && p[content] != 0x93))
                return refuse(d, CSM_CODEC_EVALUE, content,
                              "value content not [identity, rank(, payload)]");
            if (++objects > CSM_CODEC_OBJECTS)
                return refuse(d, CSM_CODEC_EOBJECTS, content, "more than 65536 objects");
            open = p[content] & 0x0f;
            t->kind = CSM_TOKEN_VALUE;
            t->u.span.pos = start;
            t->u.span.len = open;
            pos = content + 1;
            fr[depth].end = end;
            fr[depth].outer = limit;
            limit = end;
        } else {
            return refuse(d, CSM_CODEC_ETYPE, start,
                          (b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb)
                              ? "str type not in the format (byte strings are bin)"
                              : "type not in the format");
        }

        if (is_key) {
            if (t->kind != CSM_TOKEN_BIN && t->kind != CSM_TOKEN_INT)
                return refuse(d, CSM_CODEC_EKEY, start, "map key not a byte string or integer");
            uint32_t klen = pos - start;
            uint32_t index = (top->count - top->left / 2) + 1; /* this key's, from 1 */
            if (index > 1) {
                uint32_t m = klen < top->klen ? klen : top->klen;
                int c = memcmp(p + top->key, p + start, m);
                if (c == 0 && klen == top->klen)
                    return refuse(d, CSM_CODEC_EORDER, start, "duplicate map key");
                if (c > 0 || (c == 0 && top->klen > klen))
                    return refuse(d, CSM_CODEC_EORDER, start, "map keys out of order");
            }
            top->key = start;
            top->klen = klen;
            top->seq = top->seq && t->kind == CSM_TOKEN_INT && t->u.i == (int64_t)index;
        } else if (top != NULL && top->kind == CSM_TOKEN_VALUE) {
            if (item == 0 && !(t->kind == CSM_TOKEN_BIN && t->u.span.len > 0))
                return refuse(d, CSM_CODEC_EVALUE, start, "value identity not a non-empty byte string");
            if (item == 1 && !(t->kind == CSM_TOKEN_INT && t->u.i >= 0))
                return refuse(d, CSM_CODEC_EVALUE, start, "value rank not an integer >= 0");
            if (item == 2 && t->kind == CSM_TOKEN_NIL)
                return refuse(d, CSM_CODEC_EVALUE, start, "value payload nil (omitted when none)");
        } else if (top != NULL && t->kind == CSM_TOKEN_NIL) {
            return refuse(d, CSM_CODEC_ECANONICAL, start, "nil in a table (a table holds none)");
        }
        nt++;

        if (open > 0) {
            dframe *f = &fr[depth++];
            f->kind = t->kind;
            f->left = open;
            f->count = t->kind == CSM_TOKEN_MAP ? open / 2 : open;
            f->start = start;
            f->seq = 1;
            continue;
        }
        /* the object is complete: close the containers it completes */
        while (depth > 0) {
            dframe *f = &fr[depth - 1];
            if (--f->left > 0)
                break;
            if (f->kind == CSM_TOKEN_MAP && f->seq)
                return refuse(d, CSM_CODEC_ECANONICAL, f->start,
                              "map that is an array (keys 1..n)");
            if (f->kind == CSM_TOKEN_VALUE) {
                if (pos != f->end)
                    return refuse(d, CSM_CODEC_EVALUE, pos, "value content shorter than its length");
                limit = f->outer;
            }
            depth--;
        }
        if (depth == 0)
            break;
    }
    if (pos != n)
        return refuse(d, CSM_CODEC_ETRAILING, pos, "trailing bytes");
    d->ntokens = nt;
    return CSM_CODEC_OK;
}

/* ---- encoding ---- */

/* What the buffer may hold beyond a frame while values' headers are
 * reserved at their longest (5 bytes more than the shortest, per value). */
#define CSM_CODEC_SLACK (8 * (CSM_CODEC_DEPTH + 1))

void csm_encoder_init(csm_encoder *e, csm_codec_alloc alloc, void *ud)
{
    memset(e, 0, sizeof *e);
    e->alloc = alloc;
    e->ud = ud;
}

void csm_encoder_free(csm_encoder *e)
{
    if (e->buf != NULL)
        e->alloc(e->ud, e->buf, e->cap, 0);
    if (e->scratch != NULL)
        e->alloc(e->ud, e->scratch, e->scratch_cap, 0);
    if (e->pairs != NULL)
        e->alloc(e->ud, e->pairs, e->pairs_cap * sizeof *e->pairs, 0);
    csm_encoder_init(e, e->alloc, e->ud);
}

void csm_encoder_reset(csm_encoder *e)
{
    e->len = 0;
    e->npairs = 0;
    e->depth = 0;
    e->arrays = 0;
    e->objects = 0;
    e->error = CSM_CODEC_OK;
}

static int fail(csm_encoder *e, int code)
{
    if (e->error == CSM_CODEC_OK)
        e->error = code;
    return e->error;
}

/* Room for k more bytes in e->buf. */
static int room(csm_encoder *e, size_t k)
{
    if (e->len + k <= e->cap)
        return CSM_CODEC_OK;
    if (e->len + k > CSM_CODEC_FRAME + CSM_CODEC_SLACK)
        return fail(e, CSM_CODEC_ESIZE);
    size_t cap = e->cap < 256 ? 256 : e->cap * 2;
    while (cap < e->len + k)
        cap *= 2;
    if (cap > CSM_CODEC_FRAME + CSM_CODEC_SLACK)
        cap = CSM_CODEC_FRAME + CSM_CODEC_SLACK;
    uint8_t *b = e->alloc(e->ud, e->buf, e->cap, cap);
    if (b == NULL)
        return fail(e, CSM_CODEC_ENOMEM);
    e->buf = b;
    e->cap = cap;
    return CSM_CODEC_OK;
}

/* Starts an object of the given kind: counts it, records a map pair that
 * begins with it and checks that a key is a key. */
static int begin(csm_encoder *e, int kind)
{
    if (e->error != CSM_CODEC_OK)
        return e->error;
    if (++e->objects > CSM_CODEC_OBJECTS)
        return fail(e, CSM_CODEC_EOBJECTS);
    if (e->depth > 0) {
        csm_codec_frame *f = &e->frames[e->depth - 1];
        if (f->kind == CSM_TOKEN_MAP && f->left % 2 == 0) {
            if (kind != CSM_TOKEN_BIN && kind != CSM_TOKEN_INT)
                return fail(e, CSM_CODEC_EKEY);
            if (e->npairs == e->pairs_cap) {
                size_t cap = e->pairs_cap < 16 ? 16 : e->pairs_cap * 2;
                csm_codec_pair *np = e->alloc(e->ud, e->pairs, e->pairs_cap * sizeof *np,
                                              cap * sizeof *np);
                if (np == NULL)
                    return fail(e, CSM_CODEC_ENOMEM);
                e->pairs = np;
                e->pairs_cap = cap;
            }
            e->pairs[e->npairs++].off = (uint32_t)e->len;
        }
    }
    return CSM_CODEC_OK;
}

static int compare_keys(const void *a, const void *b)
{
    const csm_codec_pair *x = a, *y = b;
    uint32_t m = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, m);
    if (c != 0)
        return c;
    return x->klen < y->klen ? -1 : x->klen > y->klen;
}

/* Puts the pairs of the map closing (f) in the order of their keys' bytes. */
static int close_map(csm_encoder *e, csm_codec_frame *f)
{
    csm_codec_pair *pairs = e->pairs + f->pairs;
    size_t n = e->npairs - f->pairs;
    int sorted = 1;
    for (size_t i = 0; i < n; i++) {
        pairs[i].len = (uint32_t)((i + 1 < n ? pairs[i + 1].off : e->len) - pairs[i].off);
        pairs[i].key = e->buf + pairs[i].off;
        pairs[i].klen = key_len(pairs[i].key);
        if (i > 0 && sorted && compare_keys(&pairs[i - 1], &pairs[i]) >= 0)
            sorted = 0;
    }
    if (!sorted) {
        qsort(pairs, n, sizeof *pairs, compare_keys);
        for (size_t i = 1; i < n; i++)
            if (compare_keys(&pairs[i - 1], &pairs[i]) == 0)
                return fail(e, CSM_CODEC_EORDER);
        size_t total = e->len - f->start;
        if (e->scratch_cap < total) {
            uint8_t *s = e->alloc(e->ud, e->scratch, e->scratch_cap, total);
            if (s == NULL)
                return fail(e, CSM_CODEC_ENOMEM);
            e->scratch = s;
            e->scratch_cap = total;
        }
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(e->scratch + at, pairs[i].key, pairs[i].len);
            at += pairs[i].len;
        }
        memcpy(e->buf + f->start, e->scratch, total);
    }
    /* the keys in order are 1..n: an array's, which has the other form */
    int seq = 1;
    size_t at = f->start;
    for (size_t i = 0; i < n && seq; i++) {
        const uint8_t *k = e->buf + at;
        seq = key_is(k, key_len(k), i + 1);
        at += pairs[i].len;
    }
    e->npairs = f->pairs;
    if (seq)
        return fail(e, CSM_CODEC_ECANONICAL);
    return CSM_CODEC_OK;
}

/* Writes the header of the value closing (f) in its shortest form, over
 * the longest one reserved. */
static void close_value(csm_encoder *e, csm_codec_frame *f)
{
    size_t clen = e->len - f->start - 6;
    uint8_t h[6];
    int hn;
    if (clen == 1 || clen == 2 || clen == 4 || clen == 8 || clen == 16) {
        h[0] = (uint8_t)(0xd4 + (clen == 1 ? 0 : clen == 2 ? 1 : clen == 4 ? 2 : clen == 8 ? 3 : 4));
        hn = 1;
    } else if (clen <= 0xff) {
        h[0] = 0xc7;
        h[1] = (uint8_t)clen;
        hn = 2;
    } else if (clen <= 0xffff) {
        h[0] = 0xc8;
        put_be(h + 1, clen, 2);
        hn = 3;
    } else {
        h[0] = 0xc9;
        put_be(h + 1, clen, 4);
        hn = 5;
    }
    h[hn++] = CSM_CODEC_EXT_VALUE;
    uint8_t *at = e->buf + f->start;
    if (hn < 6)
        memmove(at + hn, at + 6, clen);
    memcpy(at, h, (size_t)hn);
    e->len -= (size_t)(6 - hn);
}

/* An object is complete: closes the containers it completes. */
static int done(csm_encoder *e)
{
    while (e->depth > 0) {
        csm_codec_frame *f = &e->frames[e->depth - 1];
        if (--f->left > 0)
            break;
        if (f->kind == CSM_TOKEN_MAP) {
            if (close_map(e, f) != CSM_CODEC_OK)
                return e->error;
        } else if (f->kind == CSM_TOKEN_VALUE) {
            close_value(e, f);
        }
        e->arrays--;
        e->depth--;
    }
    return CSM_CODEC_OK;
}

static int put_uint(csm_encoder *e, uint64_t v)
{
    if (room(e, 9) != CSM_CODEC_OK)
        return e->error;
    uint8_t *p = e->buf + e->len;
    if (v <= 0x7f) {
        p[0] = (uint8_t)v;
        e->len += 1;
    } else if (v <= 0xff) {
        p[0] = 0xcc;
        p[1] = (uint8_t)v;
        e->len += 2;
    } else if (v <= 0xffff) {
        p[0] = 0xcd;
        put_be(p + 1, v, 2);
        e->len += 3;
    } else if (v <= 0xffffffffu) {
        p[0] = 0xce;
        put_be(p + 1, v, 4);
        e->len += 5;
    } else {
        p[0] = 0xcf;
        put_be(p + 1, v, 8);
        e->len += 9;
    }
    return CSM_CODEC_OK;
}

static int put_int(csm_encoder *e, int64_t i)
{
    if (i >= 0)
        return put_uint(e, (uint64_t)i);
    if (room(e, 9) != CSM_CODEC_OK)
        return e->error;
    uint8_t *p = e->buf + e->len;
    if (i >= -32) {
        p[0] = (uint8_t)(i & 0xff);
        e->len += 1;
    } else if (i >= -128) {
        p[0] = 0xd0;
        p[1] = (uint8_t)(i & 0xff);
        e->len += 2;
    } else if (i >= -32768) {
        p[0] = 0xd1;
        put_be(p + 1, (uint64_t)i, 2);
        e->len += 3;
    } else if (i >= -2147483648LL) {
        p[0] = 0xd2;
        put_be(p + 1, (uint64_t)i, 4);
        e->len += 5;
    } else {
        p[0] = 0xd3;
        put_be(p + 1, (uint64_t)i, 8);
        e->len += 9;
    }
    return CSM_CODEC_OK;
}

/* A length-prefixed header: fix (base | n) below fixmax, else the 8-, 16-
 * or 32-bit form whose type bytes are t8 (0: none), t16 and t32. */
static int put_header(csm_encoder *e, uint64_t n, int fixbase, uint64_t fixmax, int t8, int t16,
                      int t32)
{
    if (room(e, 5) != CSM_CODEC_OK)
        return e->error;
    uint8_t *p = e->buf + e->len;
    if (fixbase >= 0 && n <= fixmax) {
        p[0] = (uint8_t)(fixbase | (int)n);
        e->len += 1;
    } else if (t8 != 0 && n <= 0xff) {
        p[0] = (uint8_t)t8;
        p[1] = (uint8_t)n;
        e->len += 2;
    } else if (n <= 0xffff) {
        p[0] = (uint8_t)t16;
        put_be(p + 1, n, 2);
        e->len += 3;
    } else {
        p[0] = (uint8_t)t32;
        put_be(p + 1, n, 4);
        e->len += 5;
    }
    return CSM_CODEC_OK;
}

/* Opens a container (kind) of left items at start. */
static int push(csm_encoder *e, int kind, uint32_t left, size_t start)
{
    csm_codec_frame *f = &e->frames[e->depth++];
    f->kind = (uint8_t)kind;
    f->left = left;
    f->start = (uint32_t)start;
    f->pairs = (uint32_t)e->npairs;
    e->arrays++;
    return CSM_CODEC_OK;
}

int csm_encode_nil(csm_encoder *e)
{
    if (begin(e, CSM_TOKEN_NIL) != CSM_CODEC_OK || room(e, 1) != CSM_CODEC_OK)
        return e->error;
    e->buf[e->len++] = 0xc0;
    return done(e);
}

int csm_encode_bool(csm_encoder *e, int b)
{
    if (begin(e, CSM_TOKEN_TRUE) != CSM_CODEC_OK || room(e, 1) != CSM_CODEC_OK)
        return e->error;
    e->buf[e->len++] = b ? 0xc3 : 0xc2;
    return done(e);
}

int csm_encode_int(csm_encoder *e, int64_t i)
{
    if (i < -CSM_CODEC_INT_MAX || i > CSM_CODEC_INT_MAX)
        return fail(e, CSM_CODEC_ERANGE);
    if (begin(e, CSM_TOKEN_INT) != CSM_CODEC_OK || put_int(e, i) != CSM_CODEC_OK)
        return e->error;
    return done(e);
}

int csm_encode_number(csm_encoder *e, double x)
{
    if (!is_finite(x))
        return fail(e, CSM_CODEC_ERANGE);
    if (is_integral(x)) {
        if (!(x >= -(double)CSM_CODEC_INT_MAX && x <= (double)CSM_CODEC_INT_MAX))
            return fail(e, CSM_CODEC_ERANGE);
        return csm_encode_int(e, (int64_t)x);
    }
    if (begin(e, CSM_TOKEN_FLOAT) != CSM_CODEC_OK || room(e, 9) != CSM_CODEC_OK)
        return e->error;
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    e->buf[e->len] = 0xcb;
    put_be(e->buf + e->len + 1, u, 8);
    e->len += 9;
    return done(e);
}

int csm_encode_bin(csm_encoder *e, const void *bytes, size_t n)
{
    if (n > CSM_CODEC_FRAME)
        return fail(e, CSM_CODEC_ESIZE);
    if (begin(e, CSM_TOKEN_BIN) != CSM_CODEC_OK ||
        put_header(e, n, -1, 0, 0xc4, 0xc5, 0xc6) != CSM_CODEC_OK || room(e, n) != CSM_CODEC_OK)
        return e->error;
    if (n > 0)
        memcpy(e->buf + e->len, bytes, n);
    e->len += n;
    return done(e);
}

int csm_encode_array(csm_encoder *e, uint32_t n)
{
    if (e->arrays >= CSM_CODEC_DEPTH)
        return fail(e, CSM_CODEC_EDEPTH);
    if (begin(e, CSM_TOKEN_ARRAY) != CSM_CODEC_OK ||
        put_header(e, n, 0x90, 15, 0, 0xdc, 0xdd) != CSM_CODEC_OK)
        return e->error;
    if (n == 0)
        return done(e);
    return push(e, CSM_TOKEN_ARRAY, n, e->len);
}

int csm_encode_map(csm_encoder *e, uint32_t n)
{
    if (n == 0)
        return fail(e, CSM_CODEC_ECANONICAL);
    if (n > CSM_CODEC_OBJECTS)
        return fail(e, CSM_CODEC_EOBJECTS);
    if (e->arrays >= CSM_CODEC_DEPTH)
        return fail(e, CSM_CODEC_EDEPTH);
    if (begin(e, CSM_TOKEN_MAP) != CSM_CODEC_OK ||
        put_header(e, n, 0x80, 15, 0, 0xde, 0xdf) != CSM_CODEC_OK)
        return e->error;
    return push(e, CSM_TOKEN_MAP, 2 * n, e->len);
}

int csm_encode_value(csm_encoder *e, const void *identity, size_t len, uint64_t rank,
                     int has_payload)
{
    if (len == 0)
        return fail(e, CSM_CODEC_EVALUE);
    if (rank > (uint64_t)CSM_CODEC_INT_MAX)
        return fail(e, CSM_CODEC_ERANGE);
    if (len > CSM_CODEC_FRAME)
        return fail(e, CSM_CODEC_ESIZE);
    if (e->arrays >= CSM_CODEC_DEPTH)
        return fail(e, CSM_CODEC_EDEPTH);
    if (begin(e, CSM_TOKEN_VALUE) != CSM_CODEC_OK || room(e, 7) != CSM_CODEC_OK)
        return e->error;
    /* the extension, its content array, the identity and the rank */
    e->objects += 3;
    if (e->objects > CSM_CODEC_OBJECTS)
        return fail(e, CSM_CODEC_EOBJECTS);
    size_t start = e->len;
    e->len += 6; /* the longest header, shortened when the value closes */
    e->buf[e->len++] = has_payload ? 0x93 : 0x92;
    if (put_header(e, len, -1, 0, 0xc4, 0xc5, 0xc6) != CSM_CODEC_OK || room(e, len) != CSM_CODEC_OK)
        return e->error;
    memcpy(e->buf + e->len, identity, len);
    e->len += len;
    if (put_uint(e, rank) != CSM_CODEC_OK)
        return e->error;
    push(e, CSM_TOKEN_VALUE, 1, start);
    if (has_payload)
        return CSM_CODEC_OK;
    return done(e);
}

const uint8_t *csm_encoder_finish(csm_encoder *e, size_t *n)
{
    if (e->error == CSM_CODEC_OK && (e->depth > 0 || e->objects == 0))
        e->error = CSM_CODEC_ESTATE;
    if (e->error == CSM_CODEC_OK && e->len > CSM_CODEC_FRAME)
        e->error = CSM_CODEC_ESIZE;
    if (e->error != CSM_CODEC_OK)
        return NULL;
    *n = e->len;
    return e->buf;
}

int csm_encode_tokens(csm_encoder *e, const csm_token *t, size_t n, const uint8_t *bytes)
{
    for (size_t i = 0; i < n; i++) {
        switch (t[i].kind) {
        case CSM_TOKEN_NIL: csm_encode_nil(e); break;
        case CSM_TOKEN_FALSE: csm_encode_bool(e, 0); break;
        case CSM_TOKEN_TRUE: csm_encode_bool(e, 1); break;
        case CSM_TOKEN_INT: csm_encode_int(e, t[i].u.i); break;
        case CSM_TOKEN_FLOAT: csm_encode_number(e, t[i].u.f); break;
        case CSM_TOKEN_BIN: csm_encode_bin(e, bytes + t[i].u.span.pos, t[i].u.span.len); break;
        case CSM_TOKEN_ARRAY: csm_encode_array(e, t[i].u.span.len); break;
        case CSM_TOKEN_MAP: csm_encode_map(e, t[i].u.span.len); break;
        case CSM_TOKEN_VALUE:
            if (i + 2 >= n)
                return fail(e, CSM_CODEC_ESTATE);
            csm_encode_value(e, bytes + t[i + 1].u.span.pos, t[i + 1].u.span.len,
                             (uint64_t)t[i + 2].u.i, t[i].u.span.len == 3);
            i += 2;
            break;
        default: return fail(e, CSM_CODEC_ESTATE);
        }
        if (e->error != CSM_CODEC_OK)
            return e->error;
    }
    return e->error;
}
