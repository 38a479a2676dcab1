/* A libFuzzer target of the wire codec (core/codec.c): the input is one
 * frame of hostile bytes. The decoder must refuse it with a code and a
 * message "... at byte N" (N inside the input, or the frame limit), or
 * accept it; an accepted frame is encoded again from its tokens and must
 * give back exactly its bytes (one form per value). Every allocation goes
 * through a counting allocator: the decoder's peak must stay within one
 * token per input byte, and the round trip's within a small multiple of
 * the input's size; nothing may be left allocated. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define FZ_CHECK(cond)                                                            \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "codec_fuzz: check failed: %s (line %d)\n", #cond,   \
                    __LINE__);                                                    \
            abort();                                                              \
        }                                                                         \
    } while (0)

typedef struct counter {
    size_t now, peak;
} counter;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    counter *c = ud;
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        c->now -= osize;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL)
        return NULL;
    c->now = c->now - osize + nsize;
    if (c->now > c->peak)
        c->peak = c->now;
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    counter c = {0, 0};
    csm_decoder d;
    csm_decoder_init(&d, counting_alloc, &c);
    int code = csm_decode(&d, data, n);
    size_t most = n < CSM_CODEC_OBJECTS ? n : CSM_CODEC_OBJECTS;
    FZ_CHECK(c.peak <= most * sizeof(csm_token));
    if (code != CSM_CODEC_OK) {
        FZ_CHECK(code > CSM_CODEC_OK && code < CSM_CODEC_NCODES);
        FZ_CHECK(d.offset <= n || (code == CSM_CODEC_ESIZE && d.offset == CSM_CODEC_FRAME));
        FZ_CHECK(strstr(d.message, " at byte ") != NULL || code == CSM_CODEC_ENOMEM);
        FZ_CHECK(d.ntokens == 0);
    } else {
        FZ_CHECK(d.ntokens > 0 && d.ntokens <= most);
        csm_encoder e;
        csm_encoder_init(&e, counting_alloc, &c);
        csm_encoder_reset(&e);
        int again = csm_encode_tokens(&e, d.tokens, d.ntokens, data);
        FZ_CHECK(again == CSM_CODEC_OK);
        size_t m = 0;
        const uint8_t *bytes = csm_encoder_finish(&e, &m);
        FZ_CHECK(bytes != NULL);
        FZ_CHECK(m == n && memcmp(bytes, data, n) == 0);
        /* tokens, the buffer (doubled as it grows), the sort's scratch and pairs */
        FZ_CHECK(c.peak <= 64 * n + 4096);
        /* a second frame on the same encoder gives the same bytes */
        csm_encoder_reset(&e);
        FZ_CHECK(csm_encode_tokens(&e, d.tokens, d.ntokens, data) == CSM_CODEC_OK);
        bytes = csm_encoder_finish(&e, &m);
        FZ_CHECK(bytes != NULL && m == n && memcmp(bytes, data, n) == 0);
        csm_encoder_free(&e);
    }
    csm_decoder_free(&d);
    FZ_CHECK(c.now == 0);
    return 0;
}
