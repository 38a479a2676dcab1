/* The wire codec: a canonical subset of MessagePack, so that the bytes a
 * signature covers are a function of the message alone. One form per value:
 * nil, booleans, integers in [-2^53, 2^53] in their shortest form
 * (non-negative ones in the uint family), non-integral finite float64s,
 * byte strings as bin, arrays, maps whose keys (byte strings or integers)
 * are unique and sorted by their encoded bytes and which are not arrays,
 * and csm values as extension type 1 holding [identity, rank(, payload)].
 * The decoder refuses every other byte sequence; decoding then encoding an
 * accepted frame gives back its bytes. No Lua, no I/O: memory comes from
 * the caller's allocator, and is bounded by a small multiple of the frame. */
#ifndef CSM_CORE_CODEC_H
#define CSM_CORE_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* The limits a frame (one encoded message) keeps, on both sides. */
#define CSM_CODEC_FRAME 1048576u /* bytes */
#define CSM_CODEC_DEPTH 8        /* nested arrays and maps (a value's content is an array) */
#define CSM_CODEC_OBJECTS 65536u /* objects: scalars, headers, values */

/* The largest integer magnitude encoded: 2^53, exact as a double. */
#define CSM_CODEC_INT_MAX 9007199254740992LL

/* The extension type of a csm value. */
#define CSM_CODEC_EXT_VALUE 1

/* The codec's results: code, short name (what Lua callers compare), text. */
#define CSM_CODEC_ERRORS(X)                                             \
    X(CSM_CODEC_OK, "ok", "ok")                                         \
    X(CSM_CODEC_ENOMEM, "nomem", "out of memory")                       \
    X(CSM_CODEC_ETRUNCATED, "truncated", "truncated")                   \
    X(CSM_CODEC_ELENGTH, "length", "length beyond the bytes left")      \
    X(CSM_CODEC_ETYPE, "type", "type not in the format")                \
    X(CSM_CODEC_ECANONICAL, "canonical", "not the canonical form")      \
    X(CSM_CODEC_ERANGE, "range", "number out of range")                 \
    X(CSM_CODEC_EKEY, "key", "map key not a byte string or integer")    \
    X(CSM_CODEC_EORDER, "order", "map keys out of order")               \
    X(CSM_CODEC_EVALUE, "value", "bad value content")                   \
    X(CSM_CODEC_EDEPTH, "depth", "nesting too deep")                    \
    X(CSM_CODEC_EOBJECTS, "objects", "too many objects")                \
    X(CSM_CODEC_ESIZE, "size", "frame too large")                       \
    X(CSM_CODEC_ETRAILING, "trailing", "trailing bytes")                \
    X(CSM_CODEC_ESTATE, "state", "encoder call out of place")

enum csm_codec_code {
#define CSM_CODEC_ENUM(code, name, text) code,
    CSM_CODEC_ERRORS(CSM_CODEC_ENUM)
#undef CSM_CODEC_ENUM
    CSM_CODEC_NCODES
};

/* The short name of a codec code ("truncated", ...); "unknown" for others. */
const char *csm_codec_errname(int code);

/* An allocator as Lua's lua_Alloc: nsize 0 frees (and returns NULL), else
 * (re)allocates ptr of osize bytes to nsize bytes, NULL on failure. */
typedef void *(*csm_codec_alloc)(void *ud, void *ptr, size_t osize, size_t nsize);

/* ---- decoding: bytes to a flat list of tokens ---- */

enum csm_token_kind {
    CSM_TOKEN_NIL,
    CSM_TOKEN_FALSE,
    CSM_TOKEN_TRUE,
    CSM_TOKEN_INT,    /* i */
    CSM_TOKEN_FLOAT,  /* f */
    CSM_TOKEN_BIN,    /* bytes at pos, len of them */
    CSM_TOKEN_ARRAY,  /* len items follow */
    CSM_TOKEN_MAP,    /* len key, value pairs follow, keys in canonical order */
    CSM_TOKEN_VALUE,  /* a csm value: span.len (2 or 3) tokens follow, its identity
                       * (BIN), its rank (INT >= 0) and, when 3, its payload */
};

/* One decoded object, in the order of the bytes (containers before their items). */
typedef struct csm_token {
    union {
        int64_t i;
        double f;
        struct {
            uint32_t pos;
            uint32_t len;
        } span;
    } u;
    uint8_t kind; /* enum csm_token_kind */
} csm_token;

/* A decoder; its token list is reused from one frame to the next. */
typedef struct csm_decoder {
    csm_codec_alloc alloc;
    void *ud;
    csm_token *tokens;
    size_t ntokens;
    size_t cap;        /* tokens allocated */
    size_t offset;     /* of the offending byte, after a refusal */
    char message[96];  /* "<reason> at byte N", after a refusal */
} csm_decoder;

/* Sets up d; nothing is allocated yet. */
void csm_decoder_init(csm_decoder *d, csm_codec_alloc alloc, void *ud);

/* Frees what d holds (d may be initialised again). */
void csm_decoder_free(csm_decoder *d);

/* Decodes the frame of n bytes into d->tokens (at most min(n, the object
 * limit) of them). Returns CSM_CODEC_OK, or a code with d->message and
 * d->offset saying what and where. */
int csm_decode(csm_decoder *d, const uint8_t *bytes, size_t n);

/* ---- encoding: calls to bytes ---- */

/* An open container of the encoder. */
typedef struct csm_codec_frame {
    uint8_t kind;       /* CSM_TOKEN_ARRAY, _MAP or _VALUE */
    uint32_t left;      /* items still to come (a map counts keys and values) */
    uint32_t start;     /* map: first pair's offset; value: where its header was reserved */
    uint32_t pairs;     /* map: index of its first pair in the encoder's pair list */
} csm_codec_frame;

/* A map pair being encoded: where its bytes begin. */
typedef struct csm_codec_pair {
    uint32_t off;
    uint32_t len;
    const uint8_t *key; /* set while sorting */
    uint32_t klen;
} csm_codec_pair;

/* An encoder: a growable buffer, the open containers and their pairs. The
 * first failure sticks: later calls return it until csm_encoder_reset. */
typedef struct csm_encoder {
    csm_codec_alloc alloc;
    void *ud;
    uint8_t *buf;
    size_t len, cap;
    uint8_t *scratch;   /* where a map's pairs are put in order */
    size_t scratch_cap;
    csm_codec_pair *pairs;
    size_t npairs, pairs_cap;
    csm_codec_frame frames[CSM_CODEC_DEPTH + 1];
    int depth;          /* open frames */
    int arrays;         /* open arrays and maps (the depth the limit counts) */
    uint32_t objects;
    int error;
} csm_encoder;

/* Sets up e; nothing is allocated yet. */
void csm_encoder_init(csm_encoder *e, csm_codec_alloc alloc, void *ud);

/* Frees what e holds (e may be initialised again). */
void csm_encoder_free(csm_encoder *e);

/* Starts a new frame, keeping the memory of the last. */
void csm_encoder_reset(csm_encoder *e);

/* Each call appends one object, or opens a container whose items the
 * next calls append (a container closes itself after its last item), and
 * returns CSM_CODEC_OK or the first failure (ERANGE, EDEPTH, EOBJECTS,
 * ESIZE, ENOMEM; EKEY for a key that is not a byte string or an integer,
 * EORDER for a duplicate key, ECANONICAL for a map that is an array). */
int csm_encode_nil(csm_encoder *e);
int csm_encode_bool(csm_encoder *e, int b);
/* i in [-2^53, 2^53], else ERANGE. */
int csm_encode_int(csm_encoder *e, int64_t i);
/* A finite number without a fraction is encoded as the integer it is (or
 * refused, ERANGE, beyond 2^53); NaN and infinities: ERANGE. */
int csm_encode_number(csm_encoder *e, double x);
int csm_encode_bin(csm_encoder *e, const void *bytes, size_t n);
int csm_encode_array(csm_encoder *e, uint32_t n);
/* n pairs follow: key, value, key, value...; they are sorted when the map closes. */
int csm_encode_map(csm_encoder *e, uint32_t n);
/* A csm value: its identity (non-empty) and rank, then, with has_payload,
 * one more object the next calls append (its payload). */
int csm_encode_value(csm_encoder *e, const void *identity, size_t len, uint64_t rank,
                     int has_payload);

/* The frame's bytes once every container is closed: *n gets their count.
 * NULL (and e->error set) if a container is open or a call failed. */
const uint8_t *csm_encoder_finish(csm_encoder *e, size_t *n);

/* Encodes the tokens d decoded again (the round trip the fuzz target checks). */
int csm_encode_tokens(csm_encoder *e, const csm_token *tokens, size_t n, const uint8_t *bytes);

#endif
