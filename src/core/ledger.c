#include "ledger.h"

#include <stdlib.h>

#include "err.h"

const char *const csm_kind_names[CSM_NKINDS] = {
    "liveness", "proposals", "votes", "confirmations",
};

void csm_ledger_init(csm_ledger *l, size_t max_entries)
{
    l->pages = NULL;
    l->npages = 0;
    l->nentries = 0;
    l->max_entries = max_entries;
}

csm_page *csm_ledger_page(csm_ledger *l, uint64_t rank)
{
    csm_page *page = NULL;
    HASH_FIND(hh, l->pages, &rank, sizeof rank, page);
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

int csm_ledger_put(csm_ledger *l, int kind, uint64_t rank, const char *key,
                   size_t keylen, const csm_value *value, int handle, int *old)
{
    *old = -1;
    csm_page *page = csm_ledger_page(l, rank);
    csm_entry *entry = NULL;
    if (page != NULL)
        HASH_FIND(hh, page->maps[kind], key, keylen, entry);
    if (entry != NULL) {
        *old = entry->handle;
        entry->value = value;
        entry->handle = handle;
        return CSM_OK;
    }
    if (page != NULL && page->sizes[kind] >= l->max_entries)
        return CSM_EFULL;
    int made_page = 0;
    if (page == NULL) {
        page = calloc(1, sizeof *page);
        if (page == NULL)
            return CSM_ENOMEM;
        page->rank = rank;
        HASH_ADD(hh, l->pages, rank, sizeof page->rank, page);
        if (page->hh.tbl == NULL) {
            free(page);
            return CSM_ENOMEM;
        }
        l->npages++;
        made_page = 1;
    }
    entry = malloc(sizeof *entry + keylen);
    if (entry == NULL)
        goto err_after_page;
    memcpy(entry->key, key, keylen);
    entry->keylen = keylen;
    entry->value = value;
    entry->handle = handle;
    HASH_ADD_KEYPTR(hh, page->maps[kind], entry->key, keylen, entry);
    if (entry->hh.tbl == NULL) {
        free(entry);
        goto err_after_page;
    }
    page->sizes[kind]++;
    l->nentries++;
    return CSM_OK;

err_after_page:
    if (made_page) {
        HASH_DEL(l->pages, page);
        l->npages--;
        free(page);
    }
    return CSM_ENOMEM;
}

static void free_page(csm_ledger *l, csm_page *page, csm_release_fn release, void *ud)
{
    for (int kind = 0; kind < CSM_NKINDS; kind++) {
        csm_entry *entry, *tmp;
        HASH_ITER(hh, page->maps[kind], entry, tmp) {
            HASH_DELETE(hh, page->maps[kind], entry);
            if (release != NULL)
                release(ud, entry->handle);
            free(entry);
            l->nentries--;
        }
    }
    HASH_DEL(l->pages, page);
    l->npages--;
    free(page);
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
