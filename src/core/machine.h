/* The machine: states, events, the transition table, the event queue, the
 * current state's timeout and the ledger of what peers sent.
 *
 * The core decides, the binding acts: csm_machine_next says which
 * transition the next queued event takes, the binding runs the Lua hooks
 * (guard, on_exit, listeners, on_enter, behaviour) around
 * csm_machine_enter, which switches state and arms the new timeout. */
#ifndef CSM_MACHINE_H
#define CSM_MACHINE_H

#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "scheduler.h"

#define CSM_STATES(X)                        \
    X(CSM_STOPPED, "stopped")                \
    X(CSM_STARTING, "starting")              \
    X(CSM_LOADING, "loading")                \
    X(CSM_COLLECTING, "collecting")          \
    X(CSM_LIVENESS_CHECK, "liveness_check")  \
    X(CSM_PROVING, "proving")                \
    X(CSM_PUBLISHING, "publishing")          \
    X(CSM_VOTING, "voting")                  \
    X(CSM_FINALIZING, "finalizing")          \
    X(CSM_VERIFYING, "verifying")            \
    X(CSM_STOPPING, "stopping")

#define CSM_EVENTS(X)                                          \
    X(CSM_EV_START, "start")                                   \
    X(CSM_EV_STOP, "stop")                                     \
    X(CSM_EV_SYNC_TIMEOUT, "sync_timeout")                     \
    X(CSM_EV_INDUCE_SYNC, "induce_sync")                       \
    X(CSM_EV_SYNC_COMPLETE, "sync_complete")                   \
    X(CSM_EV_INIT_COMPLETE, "init_complete")                   \
    X(CSM_EV_COLLECTION_DONE, "collection_done")               \
    X(CSM_EV_LIVENESS_CHECK_RECEIVED, "liveness_check_received") \
    X(CSM_EV_LIVENESS_TIMEOUT, "liveness_timeout")             \
    X(CSM_EV_PROVER_SIGNAL, "prover_signal")                   \
    X(CSM_EV_PROOF_COMPLETE, "proof_complete")                 \
    X(CSM_EV_PUBLISH_COMPLETE, "publish_complete")             \
    X(CSM_EV_PUBLISH_TIMEOUT, "publish_timeout")               \
    X(CSM_EV_PROPOSAL_RECEIVED, "proposal_received")           \
    X(CSM_EV_VOTE_RECEIVED, "vote_received")                   \
    X(CSM_EV_QUORUM_REACHED, "quorum_reached")                 \
    X(CSM_EV_VOTING_TIMEOUT, "voting_timeout")                 \
    X(CSM_EV_AGGREGATION_DONE, "aggregation_done")             \
    X(CSM_EV_AGGREGATION_TIMEOUT, "aggregation_timeout")       \
    X(CSM_EV_CONFIRMATION_RECEIVED, "confirmation_received")   \
    X(CSM_EV_VERIFICATION_DONE, "verification_done")           \
    X(CSM_EV_VERIFICATION_TIMEOUT, "verification_timeout")     \
    X(CSM_EV_CLEANUP_COMPLETE, "cleanup_complete")

enum csm_state {
#define CSM_ENUM(id, name) id,
    CSM_STATES(CSM_ENUM)
    CSM_NSTATES
};

enum csm_event {
    CSM_EVENTS(CSM_ENUM)
#undef CSM_ENUM
    CSM_NEVENTS
};

/* The built-in state and event names, indexed by the enums above. */
extern const char *const csm_state_names[CSM_NSTATES];
extern const char *const csm_event_names[CSM_NEVENTS];

/* One row of a transition table. */
typedef struct csm_transition {
    int from, event, to;
} csm_transition;

/* The 37 built-in transitions, those of the original (Go) machine, in its
 * order. */
extern const csm_transition csm_builtin_transitions[];
extern const size_t csm_builtin_ntransitions;

/* The built-in timeout of each state (seconds, 0 for none) and its event. */
extern const double csm_builtin_timeouts[CSM_NSTATES];
extern const int csm_builtin_timeout_events[CSM_NSTATES];

typedef struct csm_limits {
    uint64_t rank_window;      /* ranks accepted beyond the active one */
    size_t peers_per_rank;     /* entries per map per rank */
    size_t identity_bytes;     /* longest identity accepted */
    size_t queue;              /* events waiting at most */
} csm_limits;

/* The defaults: 64, 4096, 256, 1024. */
extern const csm_limits csm_default_limits;

/* A transition of a layout: its target (-1 once cleared) and whether a
 * guard must approve it. */
typedef struct csm_edge {
    int to;
    int guarded;
} csm_edge;

/* A layout: the states, events, transition table and timeouts of a
 * machine. Machines of one shape share one (counted references); a
 * machine whose layout changes while shared gets its own copy first. */
typedef struct csm_layout {
    size_t refs;
    int nstates, nevents;
    int32_t *cells;           /* [from * nevents + event] -> edge, or -1 if never set */
    csm_edge *edges;          /* one per cell ever set, in the order they were */
    size_t nedges, edges_cap;
    double *timeouts;         /* per state, seconds; <= 0 for none */
    int *timeout_events;
    uint8_t *flags;           /* per state, for the binding (its hooks) */
} csm_layout;

/* A new layout (one reference) of nstates states and nevents events (at
 * least the built-in ones), with the built-in table and timeouts; NULL
 * when out of memory. */
csm_layout *csm_layout_new(int nstates, int nevents);

/* Drops a reference; the last frees the layout. NULL is ignored. */
void csm_layout_release(csm_layout *l);

/* Adds or replaces from --event--> to. Returns CSM_OK, CSM_EINDEX for a
 * state or event id out of range (nothing changes), or CSM_ENOMEM. */
int csm_layout_set_transition(csm_layout *l, int from, int event, int to, int guarded);

/* Removes from --event-->. Returns CSM_OK or CSM_EINDEX. */
int csm_layout_clear_transition(csm_layout *l, int from, int event);

/* Sets a state's timeout (seconds, <= 0 for none) and the event it sends
 * (-1: none). Returns CSM_OK or CSM_EINDEX. */
int csm_layout_set_timeout(csm_layout *l, int state, double seconds, int event);

/* The edge of from --event--> (an index into edges), or -1. Ids must be in range. */
static inline int csm_layout_edge(const csm_layout *l, int from, int event)
{
    int32_t e = l->cells[(size_t)from * (size_t)l->nevents + (size_t)event];
    return e >= 0 && l->edges[e].to >= 0 ? e : -1;
}

typedef struct csm_machine {
    csm_scheduler *scheduler;
    csm_task task;            /* posted while events wait or a wake is due */
    csm_timer timeout;        /* the current state's timeout */
    int nstates, nevents;     /* the layout's */
    csm_layout *layout;
    uint64_t *taken;          /* per edge of the layout: transitions made */
    size_t ntaken;
    int state;
    double entered;           /* scheduler time of the last transition */
    int *queue;               /* a ring of event ids */
    size_t queue_cap, queue_head, queue_len;
    int receive_events[CSM_NKINDS];
    uint8_t receive_queued[CSM_NKINDS]; /* a receive event is waiting */
    csm_ledger ledger;
    csm_limits limits;
    int has_active;
    uint64_t active_rank;
    uint64_t transitions, dropped, refused, received;
    int closed;
    int driving;              /* the binding is running hooks: no re-post */
    int waiting;              /* a behaviour waits for messages */
    int wake_due;
    char error[192];          /* the message of the last refusal */
} csm_machine;

/* Sets up m with nstates states and nevents events (at least the built-in
 * ones), the built-in table and timeouts. Returns CSM_OK or CSM_ENOMEM. */
int csm_machine_init(csm_machine *m, csm_scheduler *s, int nstates, int nevents,
                     const csm_limits *limits, csm_task_cb drive);

/* Sets up m on layout, which it shares (taking a reference). Returns
 * CSM_OK or CSM_ENOMEM. */
int csm_machine_init_shared(csm_machine *m, csm_scheduler *s, csm_layout *layout,
                            const csm_limits *limits, csm_task_cb drive);

/* Frees what init made. The values the ledger holds are released. */
void csm_machine_free(csm_machine *m, csm_release_fn release, void *ud);

/* Adds or replaces from --event--> to in m's layout (copied first when
 * shared). Returns CSM_OK, CSM_EINDEX for a state or event id out of range
 * (nothing changes), or CSM_ENOMEM. */
int csm_machine_set_transition(csm_machine *m, int from, int event, int to, int guarded);

/* Removes the transition from --event-->. Returns CSM_OK, CSM_EINDEX or
 * CSM_ENOMEM (the layout was shared and could not be copied). */
int csm_machine_clear_transition(csm_machine *m, int from, int event);

/* Sets a state's timeout (seconds, <= 0 for none) and the event it sends
 * (-1: none). Returns CSM_OK, CSM_EINDEX or CSM_ENOMEM, as above. */
int csm_machine_set_timeout(csm_machine *m, int state, double seconds, int event);

/* Where from --event--> leads, or -1 when there is no such transition. Ids
 * must be in range. */
int csm_machine_target(const csm_machine *m, int from, int event);

/* Counts a transition made along from --event--> (csm_machine_enter
 * switches state; the driver counts the edge it took). */
void csm_machine_count(csm_machine *m, int from, int event);

/* Transitions made along from --event--> so far. Ids must be in range. */
uint64_t csm_machine_taken(const csm_machine *m, int from, int event);

/* Queues event. Returns CSM_OK, CSM_ECLOSED, CSM_EQUEUE, or CSM_EINDEX for
 * an id out of range. */
int csm_machine_send(csm_machine *m, int event);

/* Empties the queue, then queues stop (which a stopped or stopping machine
 * drops). Returns CSM_OK, CSM_ECLOSED, or CSM_ESTATE when the current state
 * is another without a stop transition (m->error says so). */
int csm_machine_stop(csm_machine *m);

/* Cancels everything at once and leaves the machine stopped and closed. */
void csm_machine_close(csm_machine *m);

/* Pops events until one has a transition from the current state (the
 * others are counted as dropped). Returns 1 with *event, *to and *guarded
 * set, or 0 when the queue is empty. */
int csm_machine_next(csm_machine *m, int *event, int *to, int *guarded);

/* Counts an event whose guard refused it. */
void csm_machine_drop(csm_machine *m);

/* Switches to state to: disarms the old timeout, counts the transition and
 * arms the new state's timeout. Returns CSM_OK, CSM_ENOMEM, or CSM_EINDEX
 * for a state out of range. */
int csm_machine_enter(csm_machine *m, int to);

/* Checks identity lengths and rank against the limits. Returns CSM_OK or a
 * refusal with m->error set. */
int csm_machine_admit(csm_machine *m, uint64_t rank, size_t keylen, size_t idlen);

/* A message from a peer: admits it, keeps the first entry per peer (a
 * vote whose identity differs from the one held is refused as
 * conflicting), queues the kind's receive event and wakes a waiting
 * behaviour. *stored tells whether handle was kept. */
int csm_machine_receive(csm_machine *m, int kind, const char *key, size_t keylen,
                        const csm_value *value, int handle, int *stored,
                        csm_release_fn release, void *ud);

/* Stores value under key at rank, which must be the value's rank
 * (CSM_ERANK otherwise), replacing what was there: a store is the
 * machine's own record (its vote may change from one attempt to the next),
 * not a peer's message, so no vote conflicts. Admitted as above. Returns
 * CSM_OK, a refusal with m->error set, CSM_ECLOSED or CSM_ENOMEM. */
int csm_machine_store(csm_machine *m, int kind, uint64_t rank, const char *key, size_t keylen,
                      const csm_value *value, int handle, csm_release_fn release, void *ud);

/* Sets the active rank (has = 0: none) and forgets every rank admit would
 * now refuse: those <= it, and those past the window after going back. */
void csm_machine_set_active(csm_machine *m, int has, uint64_t rank,
                            csm_release_fn release, void *ud);

/* The callback of every machine's state timeout: a timer with it is the
 * timeout member of a csm_machine. */
csm_timer_cb csm_machine_timeout_cb(void);

/* Whether the machine should stay alive without references: it is not
 * closed, and it is running or has events waiting. */
int csm_machine_busy(const csm_machine *m);

#endif
