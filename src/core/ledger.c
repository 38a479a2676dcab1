#include "ledger.h"

#include <stdlib.h>

#include "err.h"

const char *const csm_kind_names[CSM_NKINDS] = {
    "liveness", "proposals", "votes", "confirmations",
};

void csm_ledger_init(csm_ledger *l, size_t max_entries)
{
    l->rounds = NULL;
    l->nrounds = 0;
    l->nentries = 0;
    l->max_entries = max_entries;
}

csm_round *csm_ledger_round(csm_ledger *l, uint64_t rank)
{
    csm_round *round = NULL;
    HASH_FIND(hh, l->rounds, &rank, sizeof rank, round);
    return round;
}

csm_entry *csm_ledger_get(csm_ledger *l, int kind, uint64_t rank,
                          const char *key, size_t keylen)
{
    csm_round *round = csm_ledger_round(l, rank);
    if (round == NULL)
        return NULL;
    csm_entry *entry = NULL;
    HASH_FIND(hh, round->maps[kind], key, keylen, entry);
    return entry;
}

size_t csm_ledger_count(csm_ledger *l, int kind, uint64_t rank)
{
    csm_round *round = csm_ledger_round(l, rank);
    return round == NULL ? 0 : round->sizes[kind];
}

int csm_ledger_put(csm_ledger *l, int kind, uint64_t rank, const char *key,
                   size_t keylen, const csm_value *value, int handle, int *old)
{
    *old = -1;
    csm_round *round = csm_ledger_round(l, rank);
    csm_entry *entry = NULL;
    if (round != NULL)
        HASH_FIND(hh, round->maps[kind], key, keylen, entry);
    if (entry != NULL) {
        *old = entry->handle;
        entry->value = value;
        entry->handle = handle;
        return CSM_OK;
    }
    if (round != NULL && round->sizes[kind] >= l->max_entries)
        return CSM_EFULL;
    int made_round = 0;
    if (round == NULL) {
        round = calloc(1, sizeof *round);
        if (round == NULL)
            return CSM_ENOMEM;
        round->rank = rank;
        HASH_ADD(hh, l->rounds, rank, sizeof round->rank, round);
        if (round->hh.tbl == NULL) {
            free(round);
            return CSM_ENOMEM;
        }
        l->nrounds++;
        made_round = 1;
    }
    entry = malloc(sizeof *entry + keylen);
    if (entry == NULL)
        goto err_after_round;
    memcpy(entry->key, key, keylen);
    entry->keylen = keylen;
    entry->value = value;
    entry->handle = handle;
    HASH_ADD_KEYPTR(hh, round->maps[kind], entry->key, keylen, entry);
    if (entry->hh.tbl == NULL) {
        free(entry);
        goto err_after_round;
    }
    round->sizes[kind]++;
    l->nentries++;
    return CSM_OK;

err_after_round:
    if (made_round) {
        HASH_DEL(l->rounds, round);
        l->nrounds--;
        free(round);
    }
    return CSM_ENOMEM;
}

static void free_round(csm_ledger *l, csm_round *round, csm_release_fn release, void *ud)
{
    for (int kind = 0; kind < CSM_NKINDS; kind++) {
        csm_entry *entry, *tmp;
        HASH_ITER(hh, round->maps[kind], entry, tmp) {
            HASH_DELETE(hh, round->maps[kind], entry);
            if (release != NULL)
                release(ud, entry->handle);
            free(entry);
            l->nentries--;
        }
    }
    HASH_DEL(l->rounds, round);
    l->nrounds--;
    free(round);
}

void csm_ledger_prune(csm_ledger *l, uint64_t upto, csm_release_fn release, void *ud)
{
    csm_round *round, *tmp;
    HASH_ITER(hh, l->rounds, round, tmp) {
        if (round->rank <= upto)
            free_round(l, round, release, ud);
    }
}

void csm_ledger_keep(csm_ledger *l, uint64_t base, uint64_t window, csm_release_fn release,
                     void *ud)
{
    csm_round *round, *tmp;
    HASH_ITER(hh, l->rounds, round, tmp) {
        if (round->rank < base || round->rank - base >= window)
            free_round(l, round, release, ud);
    }
}

void csm_ledger_clear(csm_ledger *l, csm_release_fn release, void *ud)
{
    csm_round *round, *tmp;
    HASH_ITER(hh, l->rounds, round, tmp)
        free_round(l, round, release, ud);
}
