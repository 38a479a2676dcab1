/* Result codes of the csm core. Every core function that can fail returns
 * one of these and, where it has an object, leaves a readable message on it. */
#ifndef CSM_ERR_H
#define CSM_ERR_H

#define CSM_ERRORS(X)                                   \
    X(CSM_OK, "ok")                                     \
    X(CSM_ENOMEM, "out of memory")                      \
    X(CSM_ECLOSED, "machine is closed")                 \
    X(CSM_ESTALE, "stale rank")                         \
    X(CSM_EFAR, "rank beyond window")                   \
    X(CSM_EFULL, "map full")                            \
    X(CSM_EIDENTITY, "identity too long")               \
    X(CSM_ECONFLICT, "received conflicting vote")       \
    X(CSM_EQUEUE, "event queue full")

enum csm_code {
#define CSM_ERR_ENUM(code, text) code,
    CSM_ERRORS(CSM_ERR_ENUM)
#undef CSM_ERR_ENUM
    CSM_NCODES
};

/* The fixed text of a code ("out of memory", ...). */
const char *csm_strerror(int code);

#endif
