/* The ledger: what a machine has heard, per rank, in four maps (liveness,
 * proposals, votes, confirmations), each keyed by a peer's identity; the
 * four maps of one rank make a page.
 *
 * Entries point at values the binding keeps alive; each carries the
 * binding's handle for that value, handed back through a release function
 * when the entry goes. */
#ifndef CSM_LEDGER_H
#define CSM_LEDGER_H

#include <stddef.h>
#include <stdint.h>
/* Allocation failures are reported, never fatal: uthash then leaves the
 * added element's hh.tbl NULL. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "value.h"

enum csm_kind { CSM_LIVENESS, CSM_PROPOSALS, CSM_VOTES, CSM_CONFIRMATIONS, CSM_NKINDS };

typedef struct csm_entry {
    UT_hash_handle hh;
    const csm_value *value;
    int handle;
    size_t keylen;
    char key[];          /* the peer identity, keylen bytes */
} csm_entry;

/* Entries are never removed one by one, only with their page, so a page
 * carves them out of chunks it frees when it goes. */
typedef struct csm_chunk {
    struct csm_chunk *next;
    size_t used, cap;
    _Alignas(max_align_t) char bytes[];
} csm_chunk;

/* A page: everything heard about one rank. */
typedef struct csm_page {
    UT_hash_handle hh;
    uint64_t rank;
    csm_chunk *chunks;   /* the newest first */
    csm_entry *maps[CSM_NKINDS];
    size_t sizes[CSM_NKINDS];
} csm_page;

typedef void (*csm_release_fn)(void *ud, int handle);

typedef struct csm_ledger {
    csm_page *pages;     /* one per rank with entries, keyed by rank */
    csm_page *last;      /* the page found last (receives come in runs of one rank) */
    size_t npages;
    size_t nentries;
    size_t max_entries;   /* per map per rank */
} csm_ledger;

/* Kind names: "liveness", "proposals", "votes", "confirmations". */
extern const char *const csm_kind_names[CSM_NKINDS];

void csm_ledger_init(csm_ledger *l, size_t max_entries);

/* The page of rank, or NULL when nothing is held for it. */
csm_page *csm_ledger_page(csm_ledger *l, uint64_t rank);

/* The entry of key in kind at rank, or NULL. */
csm_entry *csm_ledger_get(csm_ledger *l, int kind, uint64_t rank,
                          const char *key, size_t keylen);

/* Stores value under key. When key is present its entry is replaced and
 * *old gets the previous handle (else -1). Returns CSM_OK, CSM_EFULL when
 * the map already holds max_entries, or CSM_ENOMEM. */
int csm_ledger_put(csm_ledger *l, int kind, uint64_t rank, const char *key,
                   size_t keylen, const csm_value *value, int handle, int *old);

/* Stores value under key unless key is present: then *held is its entry
 * and nothing changes; else *held is NULL. One hash of key either way.
 * Returns CSM_OK, CSM_EFULL (the map holds max_entries) or CSM_ENOMEM. */
int csm_ledger_add(csm_ledger *l, int kind, uint64_t rank, const char *key, size_t keylen,
                   const csm_value *value, int handle, csm_entry **held);

/* Entries in kind at rank. */
size_t csm_ledger_count(csm_ledger *l, int kind, uint64_t rank);

/* Forgets every rank <= upto, releasing each handle. */
void csm_ledger_prune(csm_ledger *l, uint64_t upto, csm_release_fn release, void *ud);

/* Forgets every rank outside [base, base + window), releasing each handle. */
void csm_ledger_keep(csm_ledger *l, uint64_t base, uint64_t window, csm_release_fn release,
                     void *ud);

/* Forgets everything. */
void csm_ledger_clear(csm_ledger *l, csm_release_fn release, void *ud);

#endif
