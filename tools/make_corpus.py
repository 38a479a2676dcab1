#!/usr/bin/env python3
"""Writes the starting corpus of csm_fuzz (src/fuzz/corpus/).

Each input is the layout machine_fuzz.c reads: a machine-count byte,
one configuration byte per machine, then operations. The opcode numbers
below mirror enum fz_op there.
Usage: python3 tools/make_corpus.py [outdir]
"""
import os
import sys

(SEND, START, NEXT_ENTER, NEXT_DROP, RECEIVE, STORE, ADMIT, SET_ACTIVE, PRUNE,
 STEP, ADVANCE, RUN_READY, SLEEP, CANCEL, STOP, CLOSE, REINIT, SET_TRANSITION,
 SET_TIMEOUT, WAITING, FLOOD, HOOKS, FAIL_ALLOC, RUN, RUN_FOR) = range(25)

# kinds
LIVENESS, PROPOSALS, VOTES, CONFIRMATIONS = range(4)
# configuration bytes: default, small (window 4, peers 3, identity 8,
# queue 4), least (1, 1, 1, 2); + 4 * extra states, + 16 * extra events
DEFAULT, SMALL, LEAST = 0, 1, 2
# rank selectors: first in window, the active rank, last in window, first
# beyond, 2^64 - 1, 64 bits follow
R_BASE, R_ACTIVE, R_LAST, R_BEYOND, R_MAX, R_BYTES = 0x00, 0x01, 0x02, 0x03, 0x05, 0x08
# identity selectors: empty, pool peer a..h, identity_bytes, over it
K_EMPTY, K_POOL, K_FULL, K_OVER = 0x00, 0x20, 0xa0, 0xc0
# step: 8 steps with no time limit
STEPS = 0x87


def header(*configs):
    return bytes([len(configs) - 1, *configs])


def steps(n):
    return bytes([STEP, STEPS] * n)


def inputs():
    yield "happy_path", header(DEFAULT) + bytes([START, 0]) + steps(4)
    yield "happy_path_small", header(SMALL) + bytes([START, 0]) + steps(8)
    yield "flood_receives", (
        header(SMALL) + bytes([START, 0]) + steps(1)
        + bytes([FLOOD, 0, LIVENESS, 10, R_BASE, FLOOD, 0, VOTES, 63, R_LAST,
                 FLOOD, 0, PROPOSALS, 5, R_BEYOND, FLOOD, 0, CONFIRMATIONS, 3, R_ACTIVE])
        + steps(2))
    yield "vote_conflict", (
        header(DEFAULT)
        + bytes([RECEIVE, 0, VOTES, R_BASE, K_POOL, K_POOL + 1,
                 RECEIVE, 0, VOTES, R_BASE, K_POOL, K_POOL + 1,
                 RECEIVE, 0, VOTES, R_BASE, K_POOL, K_POOL + 2,
                 RECEIVE, 0, PROPOSALS, R_BASE, K_POOL, K_POOL + 2])
        + steps(1))
    yield "stop_close_reinit", (
        header(DEFAULT) + bytes([START, 0]) + steps(1)
        + bytes([STOP, 0]) + steps(1)
        + bytes([CLOSE, 0, RECEIVE, 0, LIVENESS, R_BASE, K_POOL, K_POOL, START, 0,
                 REINIT, 0, SMALL, START, 0])
        + steps(2) + bytes([CLOSE, 0, REINIT, 0, DEFAULT]))
    yield "timeouts", (
        header(DEFAULT) + bytes([HOOKS, 0, 2, 2, 2, 2, START, 0])
        + bytes([SLEEP, 0, 0x46, 1, SET_TIMEOUT, 0, 3, 3, 4,
                 SET_TIMEOUT, 0, 4, 4, 6, ADVANCE, 1])
        + steps(6) + bytes([CANCEL, 0, 1, CANCEL, 0, 0]) + steps(2))
    yield "active_ranks", (
        header(SMALL)
        + bytes([SET_ACTIVE, 0, 1, R_BYTES, 0, 0, 0, 0, 0, 0, 0, 100])
        + bytes([RECEIVE, 0, LIVENESS, R_BASE, K_POOL, K_POOL,
                 STORE, 0, VOTES, R_LAST, K_POOL + 1, R_BASE, K_POOL,
                 RECEIVE, 0, LIVENESS, R_ACTIVE, K_POOL, K_POOL,
                 RECEIVE, 0, LIVENESS, R_BEYOND, K_POOL, K_POOL,
                 RECEIVE, 0, LIVENESS, R_MAX, K_POOL, K_POOL,
                 SET_ACTIVE, 0, 1, R_BYTES, 0, 0, 0, 0, 0, 0, 0, 50,
                 RECEIVE, 0, LIVENESS, R_BASE, K_POOL, K_POOL,
                 PRUNE, 0, R_LAST, SET_ACTIVE, 0, 0, R_BASE,
                 SET_ACTIVE, 0, 1, R_MAX]))
    yield "three_machines", (
        header(DEFAULT, SMALL, LEAST + 4 * 2 + 16 * 1)
        + bytes([START, 0, START, 1, START, 2])
        + bytes([RECEIVE, 1, PROPOSALS, R_BASE, K_POOL, K_POOL,
                 RECEIVE, 2, VOTES, R_BASE, K_POOL, K_POOL])
        + steps(3) + bytes([STOP, 1, CLOSE, 2]) + steps(3))
    yield "guards", (
        header(DEFAULT + 4 * 1)
        + bytes([SET_TRANSITION, 0, 0, 0, 11, 2,
                 SET_TRANSITION, 0, 11, 1, 1, 0,
                 SET_TRANSITION, 0, 1, 5, 0, 1,
                 HOOKS, 0, 1, 6, 0, 0xf0,
                 SEND, 0, 0, NEXT_DROP, 0, SEND, 0, 0, NEXT_ENTER, 0, 0,
                 SEND, 0, 7, SEND, 0, 1, WAITING, 0, 1])
        + steps(3))
    yield "identities", (
        header(SMALL)
        + bytes([RECEIVE, 0, LIVENESS, R_BASE, K_EMPTY, K_POOL,
                 RECEIVE, 0, LIVENESS, R_BASE, K_FULL, K_FULL,
                 RECEIVE, 0, LIVENESS, R_BASE, K_OVER, K_POOL,
                 RECEIVE, 0, LIVENESS, R_BASE, K_POOL, K_OVER,
                 ADMIT, 0, R_BASE, K_OVER, K_POOL,
                 RECEIVE, 0, PROPOSALS, R_BASE, 0xe0, 5, *b"peer1234ab", K_POOL]))

    # run modes: default (stopped by its budget), once, nowait; bounded runs
    yield "run_modes", (
        header(DEFAULT, SMALL) + bytes([START, 0, START, 1])
        + bytes([RUN, 0 + 4 * 20, RUN, 1, RUN, 2, RUN, 1 + 4 * 3,
                 RUN_FOR, 4, 30, RECEIVE, 0, VOTES, R_BASE, K_POOL, K_POOL,
                 RUN_FOR, 15, 200, STOP, 1, RUN, 0 + 4 * 60, RUN_FOR, 0, 5]))

    yield "alloc_failures", (
        header(DEFAULT)
        + bytes([FAIL_ALLOC, 0, START, 0, FAIL_ALLOC, 0]) + steps(1)
        + bytes([FAIL_ALLOC, 0, RECEIVE, 0, LIVENESS, R_BASE, K_POOL, K_POOL,
                 FAIL_ALLOC, 1, RECEIVE, 0, PROPOSALS, R_BASE, K_POOL, K_POOL,
                 FAIL_ALLOC, 2, STORE, 0, VOTES, R_LAST, K_POOL, R_BASE, K_POOL,
                 FAIL_ALLOC, 5, FLOOD, 0, VOTES, 40, R_BASE,
                 FAIL_ALLOC, 0, SEND, 0, 3, SEND, 0, 3, SEND, 0, 3, SEND, 0, 3,
                 SEND, 0, 3, SEND, 0, 3, SEND, 0, 3, SEND, 0, 3, SEND, 0, 3,
                 FAIL_ALLOC, 0, SLEEP, 0, 0x46, 1,
                 CLOSE, 0, FAIL_ALLOC, 1, REINIT, 0, SMALL, REINIT, 0, SMALL]))


def main():
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
        sys.exit("usage: python3 tools/make_corpus.py [outdir]   (default src/fuzz/corpus)")
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "src", "fuzz", "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in inputs():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
