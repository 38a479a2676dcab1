/* 32-bit FNV-1a (hash.h). */
#include "hash.h"

uint32_t csm_fnv1a32(const void *bytes, size_t n, uint32_t h)
{
    const unsigned char *p = bytes;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}
