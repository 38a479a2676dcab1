/* Hashes the core offers: 32-bit FNV-1a, which the lab's fingerprints and
 * simulated signatures and the reference protocol's content names are made
 * of. It identifies; on its own it protects nothing. */
#ifndef CSM_CORE_HASH_H
#define CSM_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The FNV-1a offset basis: where a hash starts. */
#define CSM_FNV1A32_BASIS 2166136261u

/* The hash of n bytes, continued from h: fnv1a32(b, fnv1a32(a, BASIS)) is
 * the hash of a then b. */
uint32_t csm_fnv1a32(const void *bytes, size_t n, uint32_t h);

#endif
