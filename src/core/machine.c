#include "machine.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

const char *const csm_state_names[CSM_NSTATES] = {
#define CSM_NAME(id, name) name,
    CSM_STATES(CSM_NAME)
};

const char *const csm_event_names[CSM_NEVENTS] = {
    CSM_EVENTS(CSM_NAME)
#undef CSM_NAME
};

#define T(from, event, to) {CSM_##from, CSM_EV_##event, CSM_##to}
#define ANY(state) T(state, STOP, STOPPING), T(state, INDUCE_SYNC, LOADING)

const csm_transition csm_builtin_transitions[] = {
    T(STOPPED, START, STARTING),
    T(STARTING, INIT_COMPLETE, LOADING),
    T(LOADING, SYNC_TIMEOUT, LOADING),
    T(LOADING, SYNC_COMPLETE, COLLECTING),
    T(COLLECTING, COLLECTION_DONE, LIVENESS_CHECK),
    T(LIVENESS_CHECK, PROVER_SIGNAL, PROVING),
    T(LIVENESS_CHECK, LIVENESS_TIMEOUT, LIVENESS_CHECK),
    T(PROVING, PROOF_COMPLETE, PUBLISHING),
    T(PROVING, PUBLISH_TIMEOUT, VOTING),
    T(PUBLISHING, PUBLISH_COMPLETE, VOTING),
    T(PUBLISHING, PUBLISH_TIMEOUT, VOTING),
    T(VOTING, PROPOSAL_RECEIVED, VOTING),
    T(VOTING, QUORUM_REACHED, FINALIZING),
    T(VOTING, VOTING_TIMEOUT, VOTING),
    T(FINALIZING, AGGREGATION_DONE, VERIFYING),
    T(FINALIZING, AGGREGATION_TIMEOUT, FINALIZING),
    T(VERIFYING, VERIFICATION_DONE, COLLECTING),
    T(VERIFYING, VERIFICATION_TIMEOUT, VERIFYING),
    ANY(STARTING), ANY(LOADING), ANY(COLLECTING), ANY(LIVENESS_CHECK),
    ANY(PROVING), ANY(PUBLISHING), ANY(VOTING), ANY(FINALIZING), ANY(VERIFYING),
    T(STOPPING, CLEANUP_COMPLETE, STOPPED),
};
#undef ANY
#undef T

const size_t csm_builtin_ntransitions =
    sizeof csm_builtin_transitions / sizeof csm_builtin_transitions[0];

const double csm_builtin_timeouts[CSM_NSTATES] = {
    [CSM_STARTING] = 1,        [CSM_LOADING] = 36000,   [CSM_COLLECTING] = 10,
    [CSM_LIVENESS_CHECK] = 2,  [CSM_PROVING] = 120,     [CSM_PUBLISHING] = 1,
    [CSM_VOTING] = 16,         [CSM_FINALIZING] = 1,    [CSM_VERIFYING] = 1,
    [CSM_STOPPING] = 30,
};

const int csm_builtin_timeout_events[CSM_NSTATES] = {
    [CSM_STOPPED] = -1,
    [CSM_STARTING] = CSM_EV_INIT_COMPLETE,
    [CSM_LOADING] = CSM_EV_SYNC_TIMEOUT,
    [CSM_COLLECTING] = CSM_EV_INDUCE_SYNC,
    [CSM_LIVENESS_CHECK] = CSM_EV_LIVENESS_TIMEOUT,
    [CSM_PROVING] = CSM_EV_PUBLISH_TIMEOUT,
    [CSM_PUBLISHING] = CSM_EV_PUBLISH_TIMEOUT,
    [CSM_VOTING] = CSM_EV_VOTING_TIMEOUT,
    [CSM_FINALIZING] = CSM_EV_AGGREGATION_TIMEOUT,
    [CSM_VERIFYING] = CSM_EV_VERIFICATION_TIMEOUT,
    [CSM_STOPPING] = CSM_EV_CLEANUP_COMPLETE,
};

const csm_limits csm_default_limits = {
    .rank_window = 64, .peers_per_rank = 4096, .identity_bytes = 256, .queue = 1024,
};

static void on_timeout(csm_timer *timer)
{
    csm_machine *m = (csm_machine *)((char *)timer - offsetof(csm_machine, timeout));
    int event = m->layout->timeout_events[m->state];
    if (event >= 0)
        csm_machine_send(m, event);
}

csm_timer_cb csm_machine_timeout_cb(void)
{
    return on_timeout;
}

/* ---- layouts ---- */

static void layout_free(csm_layout *l)
{
    free(l->cells);
    free(l->edges);
    free(l->timeouts);
    free(l->timeout_events);
    free(l->flags);
    free(l);
}

/* A layout of nstates and nevents with nothing set (cells -1), or NULL. */
static csm_layout *layout_alloc(int nstates, int nevents, size_t edges_cap)
{
    csm_layout *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    size_t cells = (size_t)nstates * (size_t)nevents;
    l->refs = 1;
    l->nstates = nstates;
    l->nevents = nevents;
    l->cells = malloc(cells * sizeof *l->cells);
    l->edges_cap = edges_cap;
    l->edges = malloc(edges_cap * sizeof *l->edges);
    l->timeouts = calloc((size_t)nstates, sizeof *l->timeouts);
    l->timeout_events = malloc((size_t)nstates * sizeof *l->timeout_events);
    l->flags = calloc((size_t)nstates, 1);
    if (!l->cells || !l->edges || !l->timeouts || !l->timeout_events || !l->flags) {
        layout_free(l);
        return NULL;
    }
    for (size_t i = 0; i < cells; i++)
        l->cells[i] = -1;
    return l;
}

csm_layout *csm_layout_new(int nstates, int nevents)
{
    if (nstates < CSM_NSTATES)
        nstates = CSM_NSTATES;
    if (nevents < CSM_NEVENTS)
        nevents = CSM_NEVENTS;
    csm_layout *l = layout_alloc(nstates, nevents, csm_builtin_ntransitions);
    if (l == NULL)
        return NULL;
    for (int i = 0; i < nstates; i++) {
        l->timeouts[i] = i < CSM_NSTATES ? csm_builtin_timeouts[i] : 0;
        l->timeout_events[i] = i < CSM_NSTATES ? csm_builtin_timeout_events[i] : -1;
    }
    for (size_t i = 0; i < csm_builtin_ntransitions; i++) {
        const csm_transition *t = &csm_builtin_transitions[i];
        csm_layout_set_transition(l, t->from, t->event, t->to, 0); /* room was made */
    }
    return l;
}

/* A copy of l with one reference, or NULL. */
static csm_layout *layout_copy(const csm_layout *l)
{
    csm_layout *c = layout_alloc(l->nstates, l->nevents, l->edges_cap);
    if (c == NULL)
        return NULL;
    size_t cells = (size_t)l->nstates * (size_t)l->nevents;
    memcpy(c->cells, l->cells, cells * sizeof *c->cells);
    memcpy(c->edges, l->edges, l->nedges * sizeof *c->edges);
    c->nedges = l->nedges;
    memcpy(c->timeouts, l->timeouts, (size_t)l->nstates * sizeof *c->timeouts);
    memcpy(c->timeout_events, l->timeout_events, (size_t)l->nstates * sizeof *c->timeout_events);
    memcpy(c->flags, l->flags, (size_t)l->nstates);
    return c;
}

void csm_layout_release(csm_layout *l)
{
    if (l != NULL && --l->refs == 0)
        layout_free(l);
}

static int layout_state(const csm_layout *l, int state)
{
    return state >= 0 && state < l->nstates;
}

static int layout_event(const csm_layout *l, int event)
{
    return event >= 0 && event < l->nevents;
}

int csm_layout_set_transition(csm_layout *l, int from, int event, int to, int guarded)
{
    if (!layout_state(l, from) || !layout_event(l, event) || !layout_state(l, to))
        return CSM_EINDEX;
    size_t i = (size_t)from * (size_t)l->nevents + (size_t)event;
    if (l->cells[i] < 0) {
        if (l->nedges == l->edges_cap) {
            size_t cap = l->edges_cap ? l->edges_cap * 2 : 8;
            csm_edge *edges = realloc(l->edges, cap * sizeof *edges);
            if (edges == NULL)
                return CSM_ENOMEM;
            l->edges = edges;
            l->edges_cap = cap;
        }
        l->cells[i] = (int32_t)l->nedges++;
    }
    l->edges[l->cells[i]] = (csm_edge){to, guarded ? 1 : 0};
    return CSM_OK;
}

int csm_layout_clear_transition(csm_layout *l, int from, int event)
{
    if (!layout_state(l, from) || !layout_event(l, event))
        return CSM_EINDEX;
    int32_t e = l->cells[(size_t)from * (size_t)l->nevents + (size_t)event];
    if (e >= 0)
        l->edges[e] = (csm_edge){-1, 0};
    return CSM_OK;
}

int csm_layout_set_timeout(csm_layout *l, int state, double seconds, int event)
{
    if (!layout_state(l, state) || (event != -1 && !layout_event(l, event)))
        return CSM_EINDEX;
    l->timeouts[state] = seconds;
    l->timeout_events[state] = event;
    return CSM_OK;
}

/* ---- machines ---- */

/* Makes room in taken for every edge of m's layout. */
static int fit_taken(csm_machine *m)
{
    size_t n = m->layout->nedges;
    if (n <= m->ntaken)
        return CSM_OK;
    uint64_t *taken = realloc(m->taken, n * sizeof *taken);
    if (taken == NULL)
        return CSM_ENOMEM;
    memset(taken + m->ntaken, 0, (n - m->ntaken) * sizeof *taken);
    m->taken = taken;
    m->ntaken = n;
    return CSM_OK;
}

int csm_machine_init_shared(csm_machine *m, csm_scheduler *s, csm_layout *layout,
                            const csm_limits *limits, csm_task_cb drive)
{
    memset(m, 0, sizeof *m);
    m->scheduler = s;
    m->layout = layout;
    layout->refs++;
    m->nstates = layout->nstates;
    m->nevents = layout->nevents;
    m->limits = limits ? *limits : csm_default_limits;
    m->task.cb = drive;
    m->state = CSM_STOPPED;
    m->entered = csm_scheduler_now(s);
    csm_timer_init(s, &m->timeout, on_timeout);
    csm_ledger_init(&m->ledger, m->limits.peers_per_rank);
    m->queue_cap = 8;
    m->queue = malloc(m->queue_cap * sizeof *m->queue);
    if (m->queue == NULL || fit_taken(m) != CSM_OK) {
        csm_machine_free(m, NULL, NULL);
        return CSM_ENOMEM;
    }
    m->receive_events[CSM_LIVENESS] = CSM_EV_LIVENESS_CHECK_RECEIVED;
    m->receive_events[CSM_PROPOSALS] = CSM_EV_PROPOSAL_RECEIVED;
    m->receive_events[CSM_VOTES] = CSM_EV_VOTE_RECEIVED;
    m->receive_events[CSM_CONFIRMATIONS] = CSM_EV_CONFIRMATION_RECEIVED;
    return CSM_OK;
}

int csm_machine_init(csm_machine *m, csm_scheduler *s, int nstates, int nevents,
                     const csm_limits *limits, csm_task_cb drive)
{
    csm_layout *layout = csm_layout_new(nstates, nevents);
    if (layout == NULL) {
        memset(m, 0, sizeof *m);
        return CSM_ENOMEM;
    }
    int rc = csm_machine_init_shared(m, s, layout, limits, drive);
    csm_layout_release(layout); /* the machine's reference is the only one */
    return rc;
}

void csm_machine_free(csm_machine *m, csm_release_fn release, void *ud)
{
    csm_machine_close(m);
    csm_timer_close(&m->timeout);
    csm_ledger_clear(&m->ledger, release, ud);
    csm_layout_release(m->layout);
    free(m->taken);
    free(m->queue);
    m->layout = NULL;
    m->taken = NULL;
    m->ntaken = 0;
    m->queue = NULL;
    m->queue_cap = 0;
}

/* Makes m's layout its own before a change. */
static int own_layout(csm_machine *m)
{
    if (m->layout->refs == 1)
        return CSM_OK;
    csm_layout *copy = layout_copy(m->layout);
    if (copy == NULL)
        return CSM_ENOMEM;
    csm_layout_release(m->layout);
    m->layout = copy;
    return CSM_OK;
}

static int valid_state(const csm_machine *m, int state)
{
    return layout_state(m->layout, state);
}

static int valid_event(const csm_machine *m, int event)
{
    return layout_event(m->layout, event);
}

int csm_machine_set_transition(csm_machine *m, int from, int event, int to, int guarded)
{
    if (!valid_state(m, from) || !valid_event(m, event) || !valid_state(m, to))
        return CSM_EINDEX;
    int rc = own_layout(m);
    if (rc == CSM_OK)
        rc = csm_layout_set_transition(m->layout, from, event, to, guarded);
    if (rc == CSM_OK)
        rc = fit_taken(m);
    return rc;
}

int csm_machine_clear_transition(csm_machine *m, int from, int event)
{
    if (!valid_state(m, from) || !valid_event(m, event))
        return CSM_EINDEX;
    int rc = own_layout(m);
    return rc == CSM_OK ? csm_layout_clear_transition(m->layout, from, event) : rc;
}

int csm_machine_set_timeout(csm_machine *m, int state, double seconds, int event)
{
    if (!valid_state(m, state) || (event != -1 && !valid_event(m, event)))
        return CSM_EINDEX;
    int rc = own_layout(m);
    return rc == CSM_OK ? csm_layout_set_timeout(m->layout, state, seconds, event) : rc;
}

int csm_machine_target(const csm_machine *m, int from, int event)
{
    int e = csm_layout_edge(m->layout, from, event);
    return e < 0 ? -1 : m->layout->edges[e].to;
}

void csm_machine_count(csm_machine *m, int from, int event)
{
    int e = csm_layout_edge(m->layout, from, event);
    if (e >= 0 && (size_t)e < m->ntaken)
        m->taken[e]++;
}

uint64_t csm_machine_taken(const csm_machine *m, int from, int event)
{
    int32_t e = m->layout->cells[(size_t)from * (size_t)m->nevents + (size_t)event];
    return e >= 0 && (size_t)e < m->ntaken ? m->taken[e] : 0;
}

static void post(csm_machine *m)
{
    if (!m->driving && !m->closed)
        csm_scheduler_post(m->scheduler, &m->task);
}

int csm_machine_send(csm_machine *m, int event)
{
    if (m->closed)
        return CSM_ECLOSED;
    if (!valid_event(m, event))
        return CSM_EINDEX;
    if (m->queue_len >= m->limits.queue) {
        snprintf(m->error, sizeof m->error, "event queue full (limit %zu)", m->limits.queue);
        return CSM_EQUEUE;
    }
    if (m->queue_len == m->queue_cap) {
        size_t cap = m->queue_cap * 2;
        int *queue = malloc(cap * sizeof *queue);
        if (queue == NULL)
            return CSM_ENOMEM;
        for (size_t i = 0; i < m->queue_len; i++)
            queue[i] = m->queue[(m->queue_head + i) % m->queue_cap];
        free(m->queue);
        m->queue = queue;
        m->queue_cap = cap;
        m->queue_head = 0;
    }
    m->queue[(m->queue_head + m->queue_len) % m->queue_cap] = event;
    m->queue_len++;
    post(m);
    return CSM_OK;
}

static void clear_queue(csm_machine *m)
{
    m->queue_head = 0;
    m->queue_len = 0;
    memset(m->receive_queued, 0, sizeof m->receive_queued);
}

int csm_machine_stop(csm_machine *m)
{
    if (m->closed)
        return CSM_ECLOSED;
    /* stopped, or on its way there, the stop is dropped as before; any other
     * state must have a stop transition */
    if (m->state != CSM_STOPPED && m->state != CSM_STOPPING &&
        csm_machine_target(m, m->state, CSM_EV_STOP) < 0) {
        snprintf(m->error, sizeof m->error, "no stop transition from the current state");
        return CSM_ESTATE;
    }
    clear_queue(m);
    return csm_machine_send(m, CSM_EV_STOP);
}

void csm_machine_close(csm_machine *m)
{
    if (m->scheduler != NULL) {
        csm_timer_stop(&m->timeout);
        csm_scheduler_unpost(m->scheduler, &m->task);
    }
    clear_queue(m);
    m->closed = 1;
    m->state = CSM_STOPPED;
    m->waiting = 0;
    m->wake_due = 0;
}

static int pop(csm_machine *m)
{
    int event = m->queue[m->queue_head];
    m->queue_head = (m->queue_head + 1) % m->queue_cap;
    m->queue_len--;
    for (int kind = 0; kind < CSM_NKINDS; kind++)
        if (m->receive_events[kind] == event)
            m->receive_queued[kind] = 0;
    return event;
}

int csm_machine_next(csm_machine *m, int *event, int *to, int *guarded)
{
    while (m->queue_len > 0 && !m->closed) {
        int ev = pop(m);
        int e = csm_layout_edge(m->layout, m->state, ev);
        if (e < 0) {
            m->dropped++;
            continue;
        }
        *event = ev;
        *to = m->layout->edges[e].to;
        *guarded = m->layout->edges[e].guarded;
        csm_scheduler_count_step(m->scheduler);
        return 1;
    }
    return 0;
}

void csm_machine_drop(csm_machine *m)
{
    m->dropped++;
}

int csm_machine_enter(csm_machine *m, int to)
{
    if (!valid_state(m, to))
        return CSM_EINDEX;
    csm_timer_stop(&m->timeout);
    m->state = to;
    m->entered = csm_scheduler_now(m->scheduler);
    m->transitions++;
    if (m->layout->timeouts[to] > 0 && m->layout->timeout_events[to] >= 0)
        return csm_timer_start(&m->timeout, m->layout->timeouts[to]);
    return CSM_OK;
}

/* The bytes of s in out (size n) as a message shows them: printable ASCII
 * as it is, other bytes as \xNN, at most 24 bytes of s (then "..."). */
#define QUOTED_MAX (24 * 4 + 4)
static void quote(char *out, size_t n, const char *s, size_t len)
{
    size_t o = 0, shown = len > 24 ? 24 : len;
    for (size_t i = 0; i < shown && o + 5 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", c);
    }
    if (shown < len && o + 4 < n) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o < n ? o : n - 1] = '\0';
}

static int refuse(csm_machine *m, int code)
{
    m->refused++;
    return code;
}

/* Refuses a vote from voter (key) at rank whose identity differs from the
 * one held. */
static int conflict(csm_machine *m, const char *key, size_t keylen, uint64_t rank)
{
    char voter[QUOTED_MAX];
    quote(voter, sizeof voter, key, keylen);
    snprintf(m->error, sizeof m->error, "conflicting vote from '%s' at rank %" PRIu64, voter, rank);
    return refuse(m, CSM_ECONFLICT);
}

int csm_machine_admit(csm_machine *m, uint64_t rank, size_t keylen, size_t idlen)
{
    size_t longest = keylen > idlen ? keylen : idlen;
    if (longest > m->limits.identity_bytes) {
        snprintf(m->error, sizeof m->error, "identity too long (%zu bytes, identity_bytes %zu)",
                 longest, m->limits.identity_bytes);
        return refuse(m, CSM_EIDENTITY);
    }
    if (m->has_active && rank <= m->active_rank) {
        snprintf(m->error, sizeof m->error, "stale rank %" PRIu64 " (active rank %" PRIu64 ")",
                 rank, m->active_rank);
        return refuse(m, CSM_ESTALE);
    }
    uint64_t base = m->has_active ? m->active_rank + 1 : 0;
    if (rank - base >= m->limits.rank_window) {
        if (m->has_active)
            snprintf(m->error, sizeof m->error,
                     "rank %" PRIu64 " beyond window (active rank %" PRIu64
                     ", rank_window %" PRIu64 ")",
                     rank, m->active_rank, m->limits.rank_window);
        else
            snprintf(m->error, sizeof m->error,
                     "rank %" PRIu64 " beyond window (no active state, rank_window %" PRIu64 ")",
                     rank, m->limits.rank_window);
        return refuse(m, CSM_EFAR);
    }
    return CSM_OK;
}

static int full(csm_machine *m, int kind, uint64_t rank)
{
    snprintf(m->error, sizeof m->error, "%s map full at rank %" PRIu64 " (peers_per_rank %zu)",
             csm_kind_names[kind], rank, m->limits.peers_per_rank);
    return refuse(m, CSM_EFULL);
}

int csm_machine_receive(csm_machine *m, int kind, const char *key, size_t keylen,
                        const csm_value *value, int handle, int *stored,
                        csm_release_fn release, void *ud)
{
    *stored = 0;
    if (m->closed) {
        snprintf(m->error, sizeof m->error, "machine is closed");
        return CSM_ECLOSED;
    }
    int rc = csm_machine_admit(m, value->rank, keylen, value->len);
    if (rc != CSM_OK)
        return rc;
    csm_entry *held;
    rc = csm_ledger_add(&m->ledger, kind, value->rank, key, keylen, value, handle, &held);
    if (rc == CSM_EFULL)
        return full(m, kind, value->rank);
    if (rc != CSM_OK)
        return rc;
    if (held == NULL)
        *stored = 1;
    else if (kind == CSM_VOTES && (held->value->len != value->len ||
                                   memcmp(held->value->identity, value->identity, value->len)))
        return conflict(m, key, keylen, value->rank);
    m->received++;
    if (!m->receive_queued[kind]) {
        rc = csm_machine_send(m, m->receive_events[kind]);
        if (rc == CSM_OK)
            m->receive_queued[kind] = 1;
    }
    if (m->waiting && !m->wake_due) {
        m->wake_due = 1;
        post(m);
    }
    return CSM_OK;
}

int csm_machine_store(csm_machine *m, int kind, uint64_t rank, const char *key, size_t keylen,
                      const csm_value *value, int handle, csm_release_fn release, void *ud)
{
    if (m->closed) {
        snprintf(m->error, sizeof m->error, "machine is closed");
        return CSM_ECLOSED;
    }
    int rc = csm_machine_admit(m, rank, keylen, value->len);
    if (rc != CSM_OK)
        return rc;
    if (value->rank != rank) {
        snprintf(m->error, sizeof m->error,
                 "a value of rank %" PRIu64 " stored at rank %" PRIu64, value->rank, rank);
        return refuse(m, CSM_ERANK);
    }
    int old;
    rc = csm_ledger_put(&m->ledger, kind, rank, key, keylen, value, handle, &old);
    if (rc == CSM_EFULL)
        return full(m, kind, rank);
    if (rc == CSM_OK && old >= 0 && release != NULL)
        release(ud, old);
    return rc;
}

void csm_machine_set_active(csm_machine *m, int has, uint64_t rank,
                            csm_release_fn release, void *ud)
{
    m->has_active = has;
    m->active_rank = has ? rank : 0;
    /* the ranks admit would refuse now: every rank <= the active one and,
     * after going back (a sync to an older state), those past the window */
    if (has && rank == UINT64_MAX)
        csm_ledger_clear(&m->ledger, release, ud);
    else
        csm_ledger_keep(&m->ledger, has ? rank + 1 : 0, m->limits.rank_window, release, ud);
}

int csm_machine_busy(const csm_machine *m)
{
    return !m->closed && (m->state != CSM_STOPPED || m->queue_len > 0 || m->driving);
}
