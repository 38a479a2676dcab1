#include "ledger.h"

#include <stddef.h>
#include <stdlib.h>

#include "err.h"

const char *const csm_kind_names[CSM_NKINDS] = {
    "liveness", "proposals", "votes", "confirmations",
};

void csm_ledger_init(csm_ledger *l, size_t max_entries)
{
    l->pages = NULL;
    l->last = NULL;
    l->npages = 0;
    l->nentries = 0;
    l->max_entries = max_entries;
}

csm_page *csm_ledger_page(csm_ledger *l, uint64_t rank)
{
    if (l->last != NULL && l->last->rank == rank)
        return l->last;
    csm_page *page = NULL;
    HASH_FIND(hh, l->pages, &rank, sizeof rank, page);
    if (page != NULL)
        l->last = page;
    return page;
}

csm_entry *csm_ledger_get(csm_ledger *l, int kind, uint64_t rank,
                          const char *key, size_t keylen)
{
    csm_page *page = csm_ledger_page(l, rank);
    if (page == NULL)
        return NULL;
    csm_entry *entry = NULL;
    HASH_FIND(hh, page->maps[kind], key, keylen, entry);
    return entry;
}

size_t csm_ledger_count(csm_ledger *l, int kind, uint64_t rank)
{
    csm_page *page = csm_ledger_page(l, rank);
    return page == NULL ? 0 : page->sizes[kind];
}

#define CHUNK_FIRST 512
#define CHUNK_MOST 16384

/* n rounded up to the alignment of every entry in a chunk. */
static size_t aligned(size_t n)
{
    return (n + _Alignof(max_align_t) - 1) & ~(size_t)(_Alignof(max_align_t) - 1);
}

/* n bytes for an entry of page, from its newest chunk or a new one (each
 * twice the last, up to CHUNK_MOST, or as big as one entry needs). */
static void *carve(csm_page *page, size_t n)
{
    n = aligned(n);
    csm_chunk *c = page->chunks;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = c == NULL ? CHUNK_FIRST : c->cap * 2;
        if (cap > CHUNK_MOST)
            cap = CHUNK_MOST;
        if (cap < n)
            cap = n;
        csm_chunk *fresh = malloc(sizeof *fresh + cap);
        if (fresh == NULL)
            return NULL;
        fresh->next = c;
        fresh->used = 0;
        fresh->cap = cap;
        page->chunks = fresh;
        c = fresh;
    }
    void *p = c->bytes + c->used;
    c->used += n;
    return p;
}

/* Gives back the last n bytes carve handed out (an entry uthash refused). */
static void uncarve(csm_page *page, size_t n)
{
    page->chunks->used -= aligned(n);
}

/* A new, empty page of rank, or NULL. */
static csm_page *new_page(csm_ledger *l, uint64_t rank)
{
    csm_page *page = calloc(1, sizeof *page);
    if (page == NULL)
        return NULL;
    page->rank = rank;
    HASH_ADD(hh, l->pages, rank, sizeof page->rank, page);
    if (page->hh.tbl == NULL) {
        free(page);
        return NULL;
    }
    l->npages++;
    l->last = page;
    return page;
}

static void drop_page(csm_ledger *l, csm_page *page)
{
    for (csm_chunk *c = page->chunks, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    HASH_DEL(l->pages, page);
    l->npages--;
    if (l->last == page)
        l->last = NULL;
    free(page);
}

int csm_ledger_add(csm_ledger *l, int kind, uint64_t rank, const char *key, size_t keylen,
                   const csm_value *value, int handle, csm_entry **held)
{
    *held = NULL;
    unsigned hashv;
    HASH_VALUE(key, keylen, hashv);
    csm_page *page = csm_ledger_page(l, rank);
    if (page != NULL) {
        HASH_FIND_BYHASHVALUE(hh, page->maps[kind], key, keylen, hashv, *held);
        if (*held != NULL)
            return CSM_OK;
        if (page->sizes[kind] >= l->max_entries)
            return CSM_EFULL;
    }
    int made = page == NULL;
    if (made && (page = new_page(l, rank)) == NULL)
        return CSM_ENOMEM;
    csm_entry *entry = carve(page, sizeof *entry + keylen);
    if (entry == NULL)
        goto err_after_page;
    memcpy(entry->key, key, keylen);
    entry->keylen = keylen;
    entry->value = value;
    entry->handle = handle;
    HASH_ADD_KEYPTR_BYHASHVALUE(hh, page->maps[kind], entry->key, keylen, hashv, entry);
    if (entry->hh.tbl == NULL) {
        uncarve(page, sizeof *entry + keylen);
        goto err_after_page;
    }
    page->sizes[kind]++;
    l->nentries++;
    return CSM_OK;

err_after_page:
    if (made)
        drop_page(l, page);
    return CSM_ENOMEM;
}

int csm_ledger_put(csm_ledger *l, int kind, uint64_t rank, const char *key,
                   size_t keylen, const csm_value *value, int handle, int *old)
{
    *old = -1;
    csm_entry *held;
    int rc = csm_ledger_add(l, kind, rank, key, keylen, value, handle, &held);
    if (rc == CSM_OK && held != NULL) {
        *old = held->handle;
        held->value = value;
        held->handle = handle;
    }
    return rc;
}

static void free_page(csm_ledger *l, csm_page *page, csm_release_fn release, void *ud)
{
    for (int kind = 0; kind < CSM_NKINDS; kind++) {
        /* the whole map goes: free its table, then walk the entries' chain */
        csm_entry *entry = page->maps[kind];
        HASH_CLEAR(hh, page->maps[kind]);
        while (entry != NULL) {
            csm_entry *next = entry->hh.next;
            if (release != NULL)
                release(ud, entry->handle);
            l->nentries--;
            entry = next;
        }
    }
    drop_page(l, page);
}

void csm_ledger_prune(csm_ledger *l, uint64_t upto, csm_release_fn release, void *ud)
{
    csm_page *page, *tmp;
    HASH_ITER(hh, l->pages, page, tmp) {
        if (page->rank <= upto)
            free_page(l, page, release, ud);
    }
}

void csm_ledger_keep(csm_ledger *l, uint64_t base, uint64_t window, csm_release_fn release,
                     void *ud)
{
    csm_page *page, *tmp;
    HASH_ITER(hh, l->pages, page, tmp) {
        if (page->rank < base || page->rank - base >= window)
            free_page(l, page, release, ud);
    }
}

void csm_ledger_clear(csm_ledger *l, csm_release_fn release, void *ud)
{
    csm_page *page, *tmp;
    HASH_ITER(hh, l->pages, page, tmp)
        free_page(l, page, release, ud);
}
