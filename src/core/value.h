/* A value as the core sees it: identity bytes and a rank, fixed at creation.
 * The binding allocates it (as Lua userdata) and keeps it alive while the
 * core holds a pointer to it. */
#ifndef CSM_VALUE_H
#define CSM_VALUE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct csm_value {
    uint64_t rank;
    size_t len;          /* identity length in bytes, >= 1 */
    unsigned has_payload;
    char identity[];     /* len bytes, NUL-terminated for convenience */
} csm_value;

/* Bytes to allocate for a value whose identity has len bytes. */
static inline size_t csm_value_size(size_t len)
{
    return sizeof(csm_value) + len + 1;
}

/* Same identity and same rank. */
static inline int csm_value_equal(const csm_value *a, const csm_value *b)
{
    return a->rank == b->rank && a->len == b->len &&
           memcmp(a->identity, b->identity, a->len) == 0;
}

#endif
