/* Result codes of the csm core. Every core function that can fail returns
 * one of these and, where it has an object, leaves a readable message on
 * it. Each code has a short name, the one Lua callers compare
 * (`nil, message, "stale"`), and a fixed text. */
#ifndef CSM_ERR_H
#define CSM_ERR_H

#define CSM_ERRORS(X)                                             \
    X(CSM_OK, "ok", "ok")                                         \
    X(CSM_ENOMEM, "nomem", "out of memory")                       \
    X(CSM_ECLOSED, "closed", "machine is closed")                 \
    X(CSM_ESTALE, "stale", "stale rank")                          \
    X(CSM_EFAR, "far", "rank beyond window")                      \
    X(CSM_EFULL, "full", "map full")                              \
    X(CSM_EIDENTITY, "identity", "identity too long")             \
    X(CSM_ECONFLICT, "conflict", "received conflicting vote")     \
    X(CSM_EQUEUE, "queue", "event queue full")                    \
    X(CSM_EINDEX, "index", "state or event id out of range")      \
    X(CSM_ERANK, "rank", "stored at a rank not the value's")      \
    X(CSM_ESTATE, "state", "no such transition from this state")

enum csm_code {
#define CSM_ERR_ENUM(code, name, text) code,
    CSM_ERRORS(CSM_ERR_ENUM)
#undef CSM_ERR_ENUM
    CSM_NCODES
};

/* The short name of a code ("stale", "full", ...); "unknown" for others. */
const char *csm_errname(int code);

/* The fixed text of a code ("out of memory", ...). */
const char *csm_strerror(int code);

#endif
