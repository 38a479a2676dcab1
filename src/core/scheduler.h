/* The scheduler: timers and runnable tasks on one of two clocks.
 *
 * A real scheduler keeps monotonic time and is driven from outside: an
 * event loop (the binding uses luv's) calls csm_scheduler_fire_due and
 * csm_scheduler_run_batch when the wake hook asked it to. A sim scheduler
 * keeps virtual time that advances only when nothing is runnable, jumping
 * to the next timer. Both run ready tasks in FIFO order and timers in (due
 * time, arming order), so a sim run is deterministic. */
#ifndef CSM_SCHEDULER_H
#define CSM_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

typedef struct csm_scheduler csm_scheduler;
typedef struct csm_timer csm_timer;
typedef struct csm_task csm_task;

typedef void (*csm_timer_cb)(csm_timer *timer);
typedef void (*csm_task_cb)(csm_task *task);
typedef void (*csm_wake_cb)(csm_scheduler *s);

/* A runnable unit, linked into the ready list; embed it in its owner. */
struct csm_task {
    csm_task *prev, *next;
    csm_task_cb cb;
    int queued;
};

/* A one-shot timer; embed it in its owner and csm_timer_init it once. */
struct csm_timer {
    csm_scheduler *scheduler;
    csm_timer_cb cb;
    double due;           /* when it fires, on the scheduler's clock */
    uint64_t seq;         /* arming order, breaks ties */
    size_t slot;          /* index in the heap while active */
    int active;
};

enum csm_scheduler_kind { CSM_REAL, CSM_SIM };

struct csm_scheduler {
    int kind;
    double now;                 /* sim: virtual seconds */
    csm_timer **heap;           /* min-heap on (due, seq) */
    size_t heap_len, heap_cap;
    uint64_t seq;
    csm_task ready;             /* sentinel of the ready list */
    size_t ready_len;
    size_t batch;               /* sim: ready tasks left in this iteration */
    uint64_t rng[4];            /* xoshiro256** state */
    int stopped;                /* a stop was asked for: runs return */
    /* sim: a run that never lets time move on is a livelock */
    double instant;             /* the virtual time steps are counted at */
    uint64_t instant_steps;     /* steps run at it */
    uint64_t instant_limit;     /* the most steps at one instant; 0: no bound */
    int livelocked;             /* the limit was passed: runs return */
    csm_task *last_task;        /* what ran last (a task, else a timer), and its */
    csm_timer *last_timer;      /* callback: the owner may be gone by the time */
    csm_task_cb last_task_cb;   /* anyone looks, so read the pointers, never */
    csm_timer_cb last_timer_cb; /* what they point to */
    csm_wake_cb wake;           /* real: told when the wake-up needed may have changed */
    int driving;                /* real: inside fire_due or run_batch (wake is not called) */
    uint64_t clock_base;        /* real: monotonic nanoseconds at creation */
};

/* The most steps a sim run takes at one virtual instant, by default. */
#define CSM_INSTANT_LIMIT 1000000

/* Sets up a sim scheduler whose random numbers come from seed; at most
 * CSM_INSTANT_LIMIT steps may run at one virtual instant (instant_limit
 * may be changed: 0 for no bound). Past it the run stops and livelocked
 * is set, with last_task or last_timer what ran last. */
void csm_scheduler_init_sim(csm_scheduler *s, uint64_t seed);

/* Sets up a real scheduler. wake is called (outside fire_due and
 * run_batch) when the first task is posted to an empty ready list, when a
 * timer becomes the earliest, and when the last timer is stopped: its
 * driver then looks again at ready_len and csm_scheduler_next_due. */
void csm_scheduler_init_real(csm_scheduler *s, csm_wake_cb wake);

/* Real: whether a timer is armed; *due gets the earliest due time. */
int csm_scheduler_next_due(const csm_scheduler *s, double *due);

/* Real: fires, in order, the timers due by now that were armed before the
 * call (a timer re-armed by a callback waits for the next call); stops
 * early when a stop is asked for. */
void csm_scheduler_fire_due(csm_scheduler *s);

/* Real: runs the tasks that were ready at the call (tasks they post wait
 * for the next call); stops early when a stop is asked for. */
void csm_scheduler_run_batch(csm_scheduler *s);

/* Releases what init made; timers closed later stay harmless. */
void csm_scheduler_close(csm_scheduler *s);

/* Seconds: virtual in a sim, monotonic since creation in a real one. */
double csm_scheduler_now(csm_scheduler *s);

/* A float in [0,1) from the scheduler's generator. */
double csm_scheduler_random(csm_scheduler *s);

/* Appends task to the ready list unless it is already there. */
void csm_scheduler_post(csm_scheduler *s, csm_task *task);

/* Takes task off the ready list if it is there. */
void csm_scheduler_unpost(csm_scheduler *s, csm_task *task);

/* Runs one ready task. Returns 1 if one ran, 0 if none was ready. */
int csm_scheduler_run_ready(csm_scheduler *s);

/* Sim: advances time to the earliest timer and fires it. Returns 1 if a
 * timer fired, 0 if none is armed. Only when no task is ready; limit, when
 * >= 0, is a virtual time not to pass (returns 0 and sets now = limit). */
int csm_scheduler_advance(csm_scheduler *s, double limit);

/* Sim: one step of an iteration shaped like libuv's: first the timers due
 * by now, one per step; then the tasks that were ready when those were
 * done, one per step; when nothing is due or ready, time jumps to the next
 * timer (not past limit, when limit >= 0). Returns 1 if something ran. */
int csm_scheduler_step(csm_scheduler *s, double limit);

/* Sim: counts one step at the current virtual instant (every task and
 * timer that runs is one; a machine counts each event it takes too).
 * Past instant_limit steps at one instant the run stops, livelocked. */
void csm_scheduler_count_step(csm_scheduler *s);

/* Sim: whether anything is left to do: a ready task or an armed timer. */
int csm_scheduler_pending(const csm_scheduler *s);

/* Makes the run in progress return: it finishes the step it is in. */
void csm_scheduler_stop(csm_scheduler *s);

enum csm_run_mode { CSM_RUN_DEFAULT, CSM_RUN_ONCE, CSM_RUN_NOWAIT };

/* Sim: runs as libuv's uv_run does in that mode, after clearing an
 * earlier stop. DEFAULT steps until nothing is left (or a stop); ONCE is
 * one iteration (the timers due by now, then the tasks ready at that
 * point), after a jump to the next timer when nothing is due or ready;
 * NOWAIT is one iteration without the jump. Returns whether work remains.
 * (A real scheduler runs as its driver runs.) */
int csm_scheduler_run(csm_scheduler *s, int mode);

/* A run bounded by time: csm_run_begin, csm_run_step until it returns 0
 * (or the caller is satisfied), csm_run_end. Sim: no timer past the limit
 * fires, and time stands at the limit when nothing is left before it.
 * Real: a deadline timer ends the run; the caller drives its event loop
 * one iteration between steps. */
typedef struct csm_run {
    csm_scheduler *scheduler;
    double limit;         /* sim: the virtual time not to pass */
    csm_timer deadline;   /* real: fires at the limit */
    int expired;          /* real: the deadline fired */
} csm_run;

/* Starts a run of seconds from now, after clearing an earlier stop.
 * Returns CSM_OK, or CSM_ENOMEM when the real loop's deadline could not be
 * armed (then there is nothing to end). */
int csm_run_begin(csm_run *run, csm_scheduler *s, double seconds);

/* One step: sim, one scheduler step; real, nothing (the caller's loop
 * iteration is the step). Returns 1 when the run goes on (check what you
 * wait for, then step again), 0 when it is over: stopped, past its limit,
 * or (sim) nothing left. */
int csm_run_step(csm_run *run);

/* Ends a run; releases its deadline. */
void csm_run_end(csm_run *run);

/* Prepares timer for use on s. */
void csm_timer_init(csm_scheduler *s, csm_timer *timer, csm_timer_cb cb);

/* Arms timer to fire once after seconds (re-arming an active one). Returns
 * CSM_OK or CSM_ENOMEM. */
int csm_timer_start(csm_timer *timer, double seconds);

/* Disarms timer; harmless when it is not armed. */
void csm_timer_stop(csm_timer *timer);

/* Disarms timer; it may be freed afterwards. */
void csm_timer_close(csm_timer *timer);

#endif
